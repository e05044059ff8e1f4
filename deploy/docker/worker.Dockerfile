# GPU worker (ptq-worker) on a CUDA base image. The CUDA build links PyTorch's CUDA libtorch
# (see docs/gpu.md); pass its location as a build argument. deploy/build-images.sh --cuda-base IMAGE
# builds it; like coordinator.Dockerfile, the runtime installs exactly the packages that hold the
# libraries the binaries load (deploy/docker/runtime-packages.sh), libtorch's own folder aside.
# Build from the repository root: docker build -f deploy/docker/worker.Dockerfile -t ptq/worker-cuda:0.1.0 .
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE} AS build
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.4.1%2Bcu124.zip
RUN apt-get update -q && apt-get install -y -q --no-install-recommends build-essential cmake ninja-build \
      git curl unzip libabsl-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libsqlite3-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libgloo-dev libmicrohttpd-dev \
      libxxhash-dev \
 && curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" && unzip -q /tmp/libtorch.zip -d /opt
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DPTQ_BUILD_TESTS=OFF -DPTQ_BUILD_BENCHMARKS=OFF -DPTQ_WITH_CUDA=ON \
      -DCMAKE_PREFIX_PATH=/opt/libtorch \
 && ninja -C /build ptq ptq-worker \
 && mkdir -p /out/bin && install -s /build/ptq /build/ptq-worker /out/bin/ \
 && LD_LIBRARY_PATH=/opt/libtorch/lib /src/deploy/docker/runtime-packages.sh --skip /opt/libtorch \
      /out/bin/* > /out/runtime-packages.txt

FROM ${CUDA_RUNTIME_IMAGE}
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -q \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y -q --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /out/bin/ /usr/local/bin/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
# The manifests run the pods as 10001 with the models at /models.
RUN useradd --uid 10001 --create-home ptq && mkdir -p /models && chown 10001:10001 /models
USER 10001
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/ptq-worker"]
