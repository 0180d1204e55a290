# Tessera in a container: a Rust build stage, then a runtime image holding nothing but the
# binary, the libraries it links, a static busybox for the health check, and a non-root user.
#
#   docker build -t tessera .
#   docker run -p 8080:8080 -v tessera-data:/data \
#     -e TESSERA_ISSUER=https://auth.example.com -e TESSERA_MASTER_KEY="$(openssl rand -base64 32)" tessera
#
# The SQLite file is /data/tessera.db (keep /data on a volume); for PostgreSQL set
# TESSERA_DATABASE_URL=postgres://... (compose.yaml: two instances on one database).
# Admin commands run in the same image: docker run --rm -v tessera-data:/data tessera users list
# The build stage's commands are scripts/docker-build-stage.sh, which CI runs too.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends busybox-static \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN scripts/docker-build-stage.sh /rootfs

FROM scratch AS runtime
COPY --from=build /rootfs/ /
USER 10001:10001
WORKDIR /data
ENV TESSERA_LISTEN=0.0.0.0:8080 \
    TESSERA_DATABASE_URL=sqlite:///data/tessera.db \
    TESSERA_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
# Probes the port above: change both together.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
