# Coordinator (ptq-coordinator), the CPU worker (ptq-worker) and the ptq CLI, on Debian 12 like the
# build machine. deploy/build-images.sh builds this and the worker images and smoke-tests them.
# Build from the repository root: docker build -f deploy/docker/coordinator.Dockerfile -t ptq/coordinator:0.1.0 .
#   BASE: the Debian 12 image to start from (default debian:12; a registry mirror's, or one made
#     with debootstrap: deploy/build-images.sh).
#   BINARIES=prebuilt: take ptq, ptq-coordinator and ptq-worker from build/image/ in the context (built
#     on Debian 12, with build/image/runtime-packages.txt from deploy/docker/runtime-packages.sh)
#     instead of compiling them in the image.
ARG BASE=debian:12
ARG BINARIES=compiled

FROM ${BASE} AS compiled
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DPTQ_BUILD_TESTS=OFF -DPTQ_BUILD_BENCHMARKS=OFF -DPTQ_WITH_CUDA=OFF \
 && ninja -C /build ptq ptq-coordinator ptq-worker \
 && mkdir -p /out/bin \
 && install -s /build/ptq /build/ptq-coordinator /build/ptq-worker /out/bin/ \
 && /src/deploy/docker/runtime-packages.sh /out/bin/* > /out/runtime-packages.txt

FROM ${BASE} AS prebuilt
COPY build/image/bin/ /out/bin/
COPY build/image/runtime-packages.txt /out/runtime-packages.txt

FROM ${BINARIES} AS binaries

FROM ${BASE}
# Exactly the packages that hold the libraries the binaries load (found where they were built).
COPY --from=binaries /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -q \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=binaries /out/bin/ /usr/local/bin/
# The manifests run the pods as 10001 (fsGroup 10001) with the store at /var/lib/ptq and models at
# /models: both exist and are writable by that user even without a volume.
RUN useradd --uid 10001 --create-home ptq \
 && mkdir -p /var/lib/ptq /models && chown 10001:10001 /var/lib/ptq /models
USER 10001
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/ptq-coordinator"]
CMD ["--listen", "0.0.0.0:50051", "--store", "/var/lib/ptq/store.sqlite", "--metrics", "0.0.0.0:9464"]
