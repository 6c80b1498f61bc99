# Builds the firehose binary into a small image; see compose.yaml.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/firehose ./cmd/firehose

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 firehose
COPY --from=build /out/firehose /usr/local/bin/firehose
USER firehose
EXPOSE 8080 1883
ENTRYPOINT ["/usr/local/bin/firehose"]
CMD ["serve"]
