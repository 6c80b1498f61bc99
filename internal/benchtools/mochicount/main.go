package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

type counter struct {
	mqtt.HookBase
	n atomic.Int64
}

func (c *counter) ID() string { return "count" }
func (c *counter) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish}, []byte{b})
}
func (c *counter) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	c.n.Add(1)
	return pk, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18884", "MQTT listen address")
	httpAddr := flag.String("http", "127.0.0.1:18885", "address of /count")
	flag.Parse()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil { // mochi refuses every client without an auth hook
		log.Fatal(err)
	}
	c := &counter{}
	if err := srv.AddHook(c, nil); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/count", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, c.n.Load()) })
	go func() { log.Fatal(http.ListenAndServe(*httpAddr, nil)) }()
	if err := srv.Serve(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = srv.Close()
	fmt.Println("publishes:", c.n.Load())
}
