// httpsload is a Go HTTPS service that has nothing to do with MCP, and a
// load client for it: the kind of program (an API server, an operator, a
// node agent) that shares a node with the monitor. `cargo xtask bench host`
// measures what the monitor costs it.
//
//	httpsload -cert C -key K -conc 8 -seconds 4
//
// serves JSON on 127.0.0.1 over HTTP/1.1 with keep-alive, and calls it
// from `conc` goroutines for `seconds` seconds, each on its own
// connection; it prints the requests per second. With -serve ADDR it only
// serves (curl or another client drives it), until killed.
//
// Standard library only; builds with Go 1.15 (the oldest toolchain of the
// tests).
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type item struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	Labels []string `json:"labels"`
	Ready  bool     `json:"ready"`
}

func handler(w http.ResponseWriter, r *http.Request) {
	items := make([]item, 4)
	for i := range items {
		items[i] = item{ID: i, Name: fmt.Sprintf("pod-%d", i), Labels: []string{"app=web", "tier=front"}, Ready: true}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]interface{}{"kind": "List", "items": items})
}

func main() {
	cert := flag.String("cert", "", "certificate (PEM)")
	key := flag.String("key", "", "private key (PEM)")
	serve := flag.String("serve", "", "only serve on this address")
	conc := flag.Int("conc", 8, "concurrent clients")
	seconds := flag.Float64("seconds", 4, "how long to call")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpsload:", err)
		os.Exit(2)
	}
	server := &http.Server{
		Handler: http.HandlerFunc(handler),
		// HTTP/1.1 only: one TLS record per request and answer, the way
		// most internal API traffic looks on the wire.
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{pair}, NextProtos: []string{"http/1.1"}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	addr := "127.0.0.1:0"
	if *serve != "" {
		addr = *serve
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpsload:", err)
		os.Exit(2)
	}
	if *serve != "" {
		fmt.Fprintln(os.Stderr, "httpsload: serving on", ln.Addr())
		_ = server.ServeTLS(ln, "", "")
		return
	}
	go func() { _ = server.ServeTLS(ln, "", "") }()

	url := "https://" + ln.Addr().String() + "/api/items"
	var done int64
	stop := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{
				TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
				MaxIdleConnsPerHost: 1,
			}}
			for time.Now().Before(stop) {
				resp, err := client.Get(url)
				if err != nil {
					fmt.Fprintln(os.Stderr, "httpsload:", err)
					os.Exit(1)
				}
				_, _ = io.Copy(ioutil.Discard, resp.Body)
				resp.Body.Close()
				atomic.AddInt64(&done, 1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("%.1f\n", float64(atomic.LoadInt64(&done))/elapsed)
}
