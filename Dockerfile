# Varve in an image built FROM scratch: the static binary and nothing else
# (no shell, no libc; health checks run `varve health` in exec form).
# Nothing can be pulled where this is built, so the binary is built on the
# host with CGO_ENABLED=0 and is the whole build context:
#
#   docker/build.sh                      # builds the binary and varve:dev
#
# or by hand, from the repository root (.dockerignore keeps the context to
# the binary):
#
#   CGO_ENABLED=0 go build -trimpath -o varve ./cmd/varve
#   docker build -t varve:dev .
FROM scratch
COPY varve /varve
# Named volumes mount here (varve serve --data /data).
VOLUME ["/data"]
# 9092 Kafka (container network), 9093 Raft, 9644 admin HTTP; a host-facing
# Kafka listener takes whatever port --listeners gives it (docker-compose.yml
# uses 19091-19093).
EXPOSE 9092 9093 9644
# Exec form (there is no shell): /readyz on the admin listener of the
# command below; docker-compose.yml sets its own.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/varve", "health", "--ready", "--admin-addr", "127.0.0.1:9644"]
ENTRYPOINT ["/varve"]
# Alone (docker run -p 9092:9092 varve:dev): one broker that clients on the
# host reach at localhost:9092. docker-compose.yml replaces this command.
CMD ["serve", "--data", "/data", "--kafka-addr", "0.0.0.0:9092", "--advertise", "localhost:9092", "--raft-addr", "0.0.0.0:9093", "--admin-addr", "0.0.0.0:9644"]
