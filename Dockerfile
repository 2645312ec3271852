# Container images of the `anneal` command: one binary is the server (`serve`), the worker
# (`worker`), the trainer process both launch, and the CLI.
#
#   docker build -t anneal .                    # CPU image (libtorch from NuGet inside)
#   docker build --target gpu -t anneal:gpu .   # CUDA image: PyTorch's libtorch, no libtorch of its own
#
#   docker run -d -p 8000:8000 -v anneal-data:/data anneal serve
#   docker run -d --gpus all -v /scratch:/work anneal:gpu worker --server http://server:8000 --token … --gpus 0
#
# The README's "Scaling out" section shows a two-host deployment with these images.

# The GPU image starts from PyTorch's CUDA runtime image: TorchSharp 0.107 is built for libtorch 2.10
# and also runs on 2.11's libraries. The trainer finds them through `python3 -c "import torch"`.
ARG TORCH_IMAGE=pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build-cpu
WORKDIR /src
COPY . .
RUN dotnet publish src/Anneal.Cli -c Release -r linux-x64 --self-contained true -o /out

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build-gpu
WORKDIR /src
COPY . .
RUN dotnet publish src/Anneal.Cli -c Release -r linux-x64 --self-contained true -p:AnnealGpu=true -o /out \
 && ! ls /out/libtorch_cpu.so 2>/dev/null

FROM ${TORCH_IMAGE} AS gpu
COPY --from=build-gpu /out /opt/anneal
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["/opt/anneal/anneal"]
CMD ["serve", "--data-dir", "/data", "--urls", "http://0.0.0.0:8000"]

FROM mcr.microsoft.com/dotnet/runtime-deps:10.0 AS cpu
COPY --from=build-cpu /out /opt/anneal
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["/opt/anneal/anneal"]
CMD ["serve", "--data-dir", "/data", "--urls", "http://0.0.0.0:8000"]
