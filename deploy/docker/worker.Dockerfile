# GPU worker (ptq-worker) on a CUDA base image. The CUDA build links PyTorch's CUDA libtorch
# (see docs/gpu.md); pass its location as a build argument.
# Build from the repository root: docker build -f deploy/docker/worker.Dockerfile -t ptq/worker-cuda:0.1.0 .
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE} AS build
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.4.1%2Bcu124.zip
RUN apt-get update -q && apt-get install -y -q --no-install-recommends build-essential cmake ninja-build \
      git curl unzip libabsl-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libsqlite3-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libgloo-dev libmicrohttpd-dev \
 && curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" && unzip -q /tmp/libtorch.zip -d /opt
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DPTQ_BUILD_TESTS=OFF -DPTQ_BUILD_BENCHMARKS=OFF -DPTQ_WITH_CUDA=ON \
      -DCMAKE_PREFIX_PATH=/opt/libtorch \
 && ninja -C /build ptq ptq-worker

FROM ${CUDA_RUNTIME_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends libgomp1 libabsl20210324 \
      libgrpc++1 libprotobuf23 libsqlite3-0 libspdlog1 libmicrohttpd12 libgloo0 ca-certificates \
 ; rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /build/ptq* /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
RUN useradd --uid 10001 --create-home ptq
USER 10001
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/ptq-worker"]
