// An MCP client over Streamable HTTP, from Go's standard library only: it
// trusts the given CA, asks for HTTP/2 (ForceAttemptHTTP2, as a Go client
// with its own TLS settings must), and runs initialize, the initialized
// notification, tools/list and tools/call of echo. It prints "ready" and
// waits for a line on stdin before connecting when -wait is given, and
// writes what it received to its transcript.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	url := flag.String("url", "", "server URL (https://host:port/mcp)")
	ca := flag.String("ca", "", "CA certificate to trust (PEM)")
	text := flag.String("text", "hello", "what echo is asked to return")
	transcript := flag.String("transcript", "", "where to write what was received")
	wait := flag.Bool("wait", false, "wait for a line on stdin before connecting")
	flag.Parse()
	pem, err := os.ReadFile(*ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
	}}
	if *wait {
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	session := ""
	var received []any
	call := func(msg map[string]any) {
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
		out, _ := io.ReadAll(resp.Body)
		entry := map[string]any{"status": resp.StatusCode, "proto": resp.Proto}
		if len(out) > 0 {
			var v any
			if err := json.Unmarshal(out, &v); err != nil {
				log.Fatalf("%s answered %q", msg["method"], out)
			}
			entry["message"] = v
		}
		received = append(received, entry)
	}
	call(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": map[string]any{
		"protocolVersion": "2025-06-18",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": "go-mcp-client", "version": "1.0.0"},
	}})
	call(map[string]any{"jsonrpc": "2.0", "method": "notifications/initialized"})
	call(map[string]any{"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
	call(map[string]any{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": map[string]any{
		"name": "echo", "arguments": map[string]any{"text": *text},
	}})
	out, _ := json.MarshalIndent(received, "", "  ")
	if err := os.WriteFile(*transcript, out, 0o600); err != nil {
		log.Fatal(err)
	}
	fmt.Println("done")
}
