// An MCP server over Streamable HTTP, from Go's standard library only:
// HTTPS, where net/http negotiates HTTP/2. It answers initialize,
// tools/list and tools/call of one tool, echo, and appends each answer to
// its record (one JSON object per line) so that a test can check what the
// monitor reports against what the server really sent.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
)

type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

var (
	recordMu sync.Mutex
	record   *os.File
)

func remember(entry map[string]interface{}) {
	recordMu.Lock()
	defer recordMu.Unlock()
	line, _ := json.Marshal(entry)
	record.Write(append(line, '\n'))
}

func result(req request) (interface{}, *map[string]interface{}) {
	switch req.Method {
	case "initialize":
		return map[string]interface{}{
			"protocolVersion": "2025-06-18",
			"capabilities":    map[string]interface{}{"tools": map[string]interface{}{}},
			"serverInfo":      map[string]interface{}{"name": "go-mcp-server", "version": "1.0.0"},
		}, nil
	case "tools/list":
		return map[string]interface{}{"tools": []interface{}{map[string]interface{}{
			"name":        "echo",
			"description": "Returns the text it is given.",
			"inputSchema": map[string]interface{}{
				"type":       "object",
				"properties": map[string]interface{}{"text": map[string]interface{}{"type": "string"}},
				"required":   []string{"text"},
			},
		}}}, nil
	case "tools/call":
		var p struct {
			Name      string `json:"name"`
			Arguments struct {
				Text string `json:"text"`
			} `json:"arguments"`
		}
		json.Unmarshal(req.Params, &p)
		if p.Name != "echo" {
			e := map[string]interface{}{"code": -32602, "message": "unknown tool " + p.Name}
			return nil, &e
		}
		return map[string]interface{}{"content": []interface{}{map[string]interface{}{"type": "text", "text": p.Arguments.Text}}}, nil
	case "ping":
		return map[string]interface{}{}, nil
	}
	e := map[string]interface{}{"code": -32601, "message": "method not found: " + req.Method}
	return nil, &e
}

func handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "only POST", http.StatusMethodNotAllowed)
		return
	}
	body, err := ioutil.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, "not JSON-RPC", http.StatusBadRequest)
		return
	}
	if len(req.ID) == 0 {
		remember(map[string]interface{}{"notification": req.Method, "proto": r.Proto})
		w.WriteHeader(http.StatusAccepted)
		return
	}
	res, rpcErr := result(req)
	answer := map[string]interface{}{"jsonrpc": "2.0", "id": req.ID}
	if rpcErr != nil {
		answer["error"] = *rpcErr
	} else {
		answer["result"] = res
	}
	if req.Method == "initialize" {
		id := make([]byte, 16)
		rand.Read(id)
		w.Header().Set("Mcp-Session-Id", hex.EncodeToString(id))
	}
	out, _ := json.Marshal(answer)
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
	remember(map[string]interface{}{"id": req.ID, "method": req.Method, "proto": r.Proto, "bytes": len(out)})
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	cert := flag.String("cert", "", "certificate (PEM)")
	key := flag.String("key", "", "private key (PEM)")
	recordPath := flag.String("record", "", "where to append each answer")
	flag.Parse()
	var err error
	record, err = os.OpenFile(*recordPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", handle)
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()
	// Handshakes cut short (a test probing the port) are not errors here.
	server := &http.Server{Handler: mux, ErrorLog: log.New(ioutil.Discard, "", 0)}
	log.Fatal(server.ServeTLS(ln, *cert, *key))
}
