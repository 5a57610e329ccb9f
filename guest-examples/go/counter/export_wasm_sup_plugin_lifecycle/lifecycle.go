// Package export_wasm_sup_plugin_lifecycle implements the exported interface
// wasm-sup:plugin/lifecycle.
package export_wasm_sup_plugin_lifecycle

import (
	"counter/gen/wasi_logging_logging"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Init runs on every instance start, before any message.
func Init() witTypes.Result[witTypes.Unit, string] {
	wasi_logging_logging.Log(wasi_logging_logging.LevelInfo, "counter", "counter starting")
	return witTypes.Ok[witTypes.Unit, string](witTypes.Unit{})
}

// Shutdown runs before a graceful stop.
func Shutdown() {
	wasi_logging_logging.Log(wasi_logging_logging.LevelInfo, "counter", "counter stopping")
}
