# Coordinator (ptq-coordinator), the CPU worker (ptq-worker) and the ptq CLI, on Debian 12 like the build machine.
# Build from the repository root: docker build -f deploy/docker/coordinator.Dockerfile -t ptq/coordinator:0.1.0 .
FROM debian:12 AS build
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN /src/scripts/install-deps.sh
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DPTQ_BUILD_TESTS=OFF -DPTQ_BUILD_BENCHMARKS=OFF -DPTQ_WITH_CUDA=OFF \
 && ninja -C /build ptq ptq-coordinator ptq-worker

FROM debian:12
RUN apt-get update -q && apt-get install -y -q --no-install-recommends \
      libtorch2.0 libopenblas0-pthread libabsl20220623 libgrpc++1.51 libprotobuf32 libsqlite3-0 \
      libspdlog1.10 libmicrohttpd12 libgloo0 ca-certificates \
 || apt-get install -y -q --no-install-recommends libtorch-dev libopenblas0-pthread libabsl-dev \
      libgrpc++-dev libsqlite3-dev libspdlog-dev libmicrohttpd-dev libgloo-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/ptq* /usr/local/bin/
RUN useradd --uid 10001 --create-home ptq
USER 10001
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/ptq-coordinator"]
CMD ["--listen", "0.0.0.0:50051", "--store", "/var/lib/ptq/store.sqlite", "--metrics", "0.0.0.0:9464"]
