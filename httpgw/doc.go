// Package httpgw is firehose's HTTP gateway: it takes readings over HTTP,
// validates them, hands them to the ingest producer and acknowledges each
// request only once its readings are durable in Redis.
//
// Endpoints (every answer is JSON):
//
//	POST /readings/fast   the seed's FastAPI endpoint: {"id": 1, "reading": 21, "timestamp": "..."},
//	                      device from X-Device-ID or --default-device-id; FastAPI-shaped 422s
//	POST /v1/readings     native: one {"device_id": "pump-7", "reading": 21.5, "ts": "...", ...},
//	                      a JSON array of them, or NDJSON (application/x-ndjson); all or nothing
//	GET  /health, /health/db, /livez, /readyz, /metrics
//
// A refused request is never acknowledged: 400/413/415/422 for bad requests,
// 401/403 for API keys, client certificates and device credentials, 503 with Retry-After when the producer refuses
// (backlog over the high-water mark, Redis unreachable, overloaded, closing).
//
// API keys (optional, --http-api-keys) are listed by their SHA-256, one per
// line, with the devices each may post for; the file is re-read when it
// changes, so a removed key stops working without a restart:
//
//	# name     sha256-hex-of-key   devices (comma-separated ids, or * for any)
//	gateway-a  9f86d08...          *
//	pump-7     2c26b46...          pump-7,pump-8
//
// Device credentials (optional, --http-device-auth mqtt; see deviceauth.go):
// each request names its device with HTTP Basic auth (device id, device
// secret), checked against the broker's credentials (Config.Devices), and
// carries only that device's readings.
//
// Use:
//
//	srv, err := httpgw.New(cfg, producer, pool.Ping, logger, registry)
//	if err != nil { ... }
//	if err := srv.Listen(); err != nil { ... } // port in use, bad certificate
//	err = srv.Run(ctx) // until ctx ends; in-flight requests get their answers
package httpgw
