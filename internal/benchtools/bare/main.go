package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

type body struct {
	ID        int     `json:"id"`
	Reading   int     `json:"reading"`
	Timestamp *string `json:"timestamp"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address")
	flag.Parse()
	http.HandleFunc("POST /readings/fast", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var b body
		if err == nil {
			err = json.Unmarshal(data, &b)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"buffered","message":"Reading buffered for processing","timestamp":"`+time.Now().UTC().Format(time.RFC3339Nano)+`"}`)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
