# otelcol-embedded-ta image: the statically linked binary that `make otelcol`
# builds (ocb compiles with CGO_ENABLED=0), on a distroless base with no
# shell, run as a non-root user. `make image` builds it where a Docker engine
# runs.
FROM gcr.io/distroless/static-debian12:nonroot
COPY bin/otelcol-embedded-ta /otelcol-embedded-ta
USER 65532:65532
# allocator API and status page, prometheus exporter, health_check
EXPOSE 8080 8889 13133
ENTRYPOINT ["/otelcol-embedded-ta"]
CMD ["--config=/conf/collector.yaml"]
