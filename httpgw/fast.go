package httpgw

import (
	"cmp"
	"net/http"
	"sync"
	"time"

	"firehose/ingest"
)

// POST /readings/fast mirrors the seed's FastAPI endpoint, whose model was
//
//	class Reading(BaseModel):
//	    id: int
//	    reading: int  # PostgreSQL smallint
//	    timestamp: datetime | None = None
//
// Bodies are judged as FastAPI (Python's json.loads, then pydantic v2 in lax
// mode) judges them, and refused with the same 422 shape, so the seed's
// clients keep working. This is the benchmark's hot path: a successful
// request costs no reflection and, with pooled state, few allocations.
//
// This file holds the handler and its pooled request state; fast_decode.go
// reads the body in one pass; pydantic.go holds pydantic's rules and words.

// fastState is one request's reusable memory. A state goes back to the pool
// only when nothing can still read it (see Producer).
type fastState struct {
	body    []byte
	payload []byte
	out     []byte
	rs      [1]ingest.Reading
}

// maxPooledBody keeps a rare large body's buffer out of the pool.
const maxPooledBody = 64 << 10

var fastPool = sync.Pool{New: func() any {
	return &fastState{body: make([]byte, 0, 512), payload: make([]byte, 0, 32), out: make([]byte, 0, 128)}
}}

func recycleFast(st *fastState) {
	if cap(st.body) > maxPooledBody {
		st.body = make([]byte, 0, 512)
	}
	st.rs[0] = ingest.Reading{}
	fastPool.Put(st)
}

func (s *Server) handleFast(w http.ResponseWriter, req *http.Request) int {
	var key *apiKey
	if s.keys != nil {
		var err error
		if key, err = s.authenticate(req); err != nil {
			return s.answerError(w, err, 1)
		}
	}
	certDevice, err := s.certDevice(req)
	if err != nil {
		return s.answerError(w, err, 1)
	}
	authDevice := "" // a certificate is enough: no secret asked of its client
	if certDevice == "" {
		if authDevice, err = s.authDevice(req); err != nil {
			return s.answerError(w, err, 1)
		}
	}
	device := cmp.Or(certDevice, authDevice, s.cfg.DefaultDevice)
	if v := req.Header["X-Device-Id"]; len(v) > 0 {
		device = v[0]
	}
	st := fastPool.Get().(*fastState)
	body, err := readBody(w, req, s.cfg.MaxBody, st.body[:0])
	st.body = body[:0]
	if err != nil {
		recycleFast(st)
		return s.answerError(w, err, 1)
	}
	now := time.Now()
	r := &st.rs[0]
	*r = ingest.Reading{DeviceID: device, ReceivedAt: now}
	var errs []pydError
	st.payload, errs = parseFast(body, r, s.cfg.Limits, st.payload[:0])
	if errs != nil {
		ae := fastInvalid(errs) // before recycling: errs point into st.body
		recycleFast(st)
		return s.answerError(w, ae, 1)
	}
	if key != nil && !key.allows(device) {
		recycleFast(st)
		return s.answerError(w, forbidden(key, device), 1)
	}
	if certDevice != "" && device != certDevice {
		recycleFast(st)
		return s.answerError(w, certForbidden(certDevice, device), 1)
	}
	if authDevice != "" && device != authDevice {
		recycleFast(st)
		return s.answerError(w, deviceForbidden(authDevice, device), 1)
	}
	if v := req.Header[headerIdempotencyKey]; len(v) > 0 {
		r.ID = v[0]
	}
	// The seed's id tells readings of one device apart (clients without
	// X-Device-ID all share the default device): under --dedup it is part
	// of the series' identity. The payload is {"id":N}, nothing else.
	r.Series = r.Payload
	if err := s.p.Add(addContext, st.rs[:]); err != nil {
		recycleFast(st)
		return s.answerError(w, err, 1)
	}
	s.m.accepted.Inc()
	st.out = append(st.out[:0], `{"status":"buffered","message":"Reading buffered for processing","timestamp":"`...)
	st.out = now.UTC().AppendFormat(st.out, time.RFC3339Nano)
	st.out = append(st.out, `"}`...)
	code := writeJSON(w, http.StatusOK, st.out)
	recycleFast(st)
	return code
}
