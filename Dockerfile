# Build a static binary, then ship it alone on a distroless base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sluice .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY config.yaml /etc/sluice/config.yaml
WORKDIR /home/nonroot
# Data plane and admin (health, readiness, metrics). The shipped config
# listens on loopback, which suits a sidecar sharing the pod's network;
# mount a config with listen: 0.0.0.0:8080 to reach it from outside.
EXPOSE 8080 9090
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "-config", "/etc/sluice/config.yaml"]
