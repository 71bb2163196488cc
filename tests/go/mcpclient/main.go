// An MCP client over Streamable HTTP, from Go's standard library only: it
// trusts the given CA, asks for HTTP/2 (ForceAttemptHTTP2, as a Go client
// with its own TLS settings must), and runs initialize, the initialized
// notification, tools/list and tools/call of echo. It prints "ready" and
// waits for a line on stdin before connecting when -wait is given, and
// writes what it received to its transcript. With -load SECONDS it then
// calls echo from -conc goroutines for that long and prints
// {"requests", "seconds", "rps"} instead (`cargo xtask bench https`).
// With -stdio it speaks to a stdio server instead (stdio.go).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "server URL (https://host:port/mcp)")
	ca := flag.String("ca", "", "CA certificate to trust (PEM)")
	text := flag.String("text", "hello", "what echo is asked to return")
	transcript := flag.String("transcript", "", "where to write what was received")
	wait := flag.Bool("wait", false, "wait for a line on stdin before connecting")
	load := flag.Float64("load", 0, "after the session, call echo for this many seconds")
	conc := flag.Int("conc", 1, "concurrent callers under -load")
	stdio := flag.Bool("stdio", false, "spawn the server command given after the flags and use stdio (see stdio.go)")
	calls := flag.Int("calls", 1, "tool calls in the stdio mode")
	flag.Parse()
	if *stdio {
		runStdio(flag.Args(), *transcript, *calls)
		return
	}
	pem, err := ioutil.ReadFile(*ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
	}}
	if *wait {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	session := ""
	var received []interface{}
	call := func(msg map[string]interface{}) {
		body, _ := json.Marshal(msg)
		req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("MCP-Protocol-Version", "2025-06-18")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		resp, err := client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
			session = s
		}
		out, _ := ioutil.ReadAll(resp.Body)
		entry := map[string]interface{}{"status": resp.StatusCode, "proto": resp.Proto}
		if len(out) > 0 {
			var v interface{}
			if err := json.Unmarshal(out, &v); err != nil {
				log.Fatalf("%s answered %q", msg["method"], out)
			}
			entry["message"] = v
		}
		received = append(received, entry)
	}
	call(map[string]interface{}{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": map[string]interface{}{
		"protocolVersion": "2025-06-18",
		"capabilities":    map[string]interface{}{},
		"clientInfo":      map[string]interface{}{"name": "go-mcp-client", "version": "1.0.0"},
	}})
	call(map[string]interface{}{"jsonrpc": "2.0", "method": "notifications/initialized"})
	call(map[string]interface{}{"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
	call(map[string]interface{}{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": map[string]interface{}{
		"name": "echo", "arguments": map[string]interface{}{"text": *text},
	}})
	if *load > 0 {
		var done int64
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(time.Duration(*load * float64(time.Second)))
		for i := 0; i < *conc; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				for n := 0; time.Now().Before(deadline); n++ {
					body, _ := json.Marshal(map[string]interface{}{"jsonrpc": "2.0", "id": 1000 + n, "method": "tools/call", "params": map[string]interface{}{
						"name": "echo", "arguments": map[string]interface{}{"text": fmt.Sprintf("load %d %d", i, n)},
					}})
					req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", "application/json, text/event-stream")
					req.Header.Set("Mcp-Session-Id", session)
					resp, err := client.Do(req)
					if err != nil {
						log.Fatal(err)
					}
					ioutil.ReadAll(resp.Body)
					resp.Body.Close()
					atomic.AddInt64(&done, 1)
				}
			}(i)
		}
		wg.Wait()
		elapsed := time.Since(start).Seconds()
		out, _ := json.Marshal(map[string]interface{}{"requests": done, "seconds": elapsed, "rps": float64(done) / elapsed})
		fmt.Println(string(out))
		return
	}
	out, _ := json.MarshalIndent(received, "", "  ")
	if err := ioutil.WriteFile(*transcript, out, 0o600); err != nil {
		log.Fatal(err)
	}
	fmt.Println("done")
}
