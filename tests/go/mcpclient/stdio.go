package main

// The stdio mode (-stdio): spawn the server named by the arguments after
// the flags and speak newline-delimited JSON-RPC on its stdin and stdout,
// the way Go MCP clients do: the answers are read by a goroutine of their
// own while the caller writes, each locked to its own thread here, so
// every request is written by one thread and its answer read by another.
// Runs initialize, initialized, tools/list and -calls calls of the time
// server's get_current_time, then writes {"client_pid", "server_pid",
// "responses"} to the transcript.

import (
	"bufio"
	"encoding/json"
	"io/ioutil"
	"log"
	"os"
	"os/exec"
	"runtime"
)

func runStdio(argv []string, transcript string, calls int) {
	if len(argv) == 0 {
		log.Fatal("-stdio: name the server command after the flags")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		log.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	answers := make(chan map[string]interface{}, 64)
	go func() {
		runtime.LockOSThread()
		lines := bufio.NewScanner(out)
		lines.Buffer(make([]byte, 1<<20), 16<<20)
		for lines.Scan() {
			var m map[string]interface{}
			if json.Unmarshal(lines.Bytes(), &m) == nil {
				answers <- m
			}
		}
		close(answers)
	}()
	runtime.LockOSThread()
	send := func(msg map[string]interface{}) {
		b, _ := json.Marshal(msg)
		if _, err := in.Write(append(b, '\n')); err != nil {
			log.Fatal(err)
		}
	}
	var responses []interface{}
	await := func(id int) {
		for m := range answers {
			if v, ok := m["id"].(float64); ok && int(v) == id {
				responses = append(responses, m)
				return
			}
		}
		log.Fatalf("the server closed its stdout before answering %d", id)
	}
	send(map[string]interface{}{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": map[string]interface{}{
		"protocolVersion": "2025-06-18",
		"capabilities":    map[string]interface{}{},
		"clientInfo":      map[string]interface{}{"name": "go-stdio-client", "version": "1.0.0"},
	}})
	await(1)
	send(map[string]interface{}{"jsonrpc": "2.0", "method": "notifications/initialized"})
	send(map[string]interface{}{"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
	await(2)
	for i := 0; i < calls; i++ {
		send(map[string]interface{}{"jsonrpc": "2.0", "id": 3 + i, "method": "tools/call", "params": map[string]interface{}{
			"name": "get_current_time", "arguments": map[string]interface{}{"timezone": "UTC"},
		}})
		await(3 + i)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		log.Printf("server: %v", err)
	}
	record, _ := json.MarshalIndent(map[string]interface{}{
		"client_pid": os.Getpid(),
		"server_pid": cmd.Process.Pid,
		"responses":  responses,
	}, "", "  ")
	if err := ioutil.WriteFile(transcript, record, 0o600); err != nil {
		log.Fatal(err)
	}
}
