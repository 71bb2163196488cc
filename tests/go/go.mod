module mcpmonitor.test/gopeers

go 1.24
