# CPU worker (ptq-worker, Gloo collectives) for clusters without GPUs: the coordinator image with a
# different entry point.
# Build from the repository root: docker build -f deploy/docker/worker-cpu.Dockerfile -t ptq/worker-cpu:0.1.0 .
ARG COORDINATOR_IMAGE=ptq/coordinator:0.1.0
FROM ${COORDINATOR_IMAGE}
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/ptq-worker"]
