# Static binary in a distroless image; run with host networking and the
# NET_ADMIN and NET_RAW capabilities (see `vigil manifest static-pod`).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=
ARG BUILD_DATE=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildVersion=${VERSION} -X main.buildCommit=${COMMIT} -X main.buildDate=${BUILD_DATE}" -o /vigil ./cmd/vigil

FROM gcr.io/distroless/static-debian12
COPY --from=build /vigil /vigil
ENTRYPOINT ["/vigil"]
CMD ["run", "-c", "/etc/vigil/vigil.yaml"]
