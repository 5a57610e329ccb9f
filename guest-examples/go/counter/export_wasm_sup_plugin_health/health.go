// Package export_wasm_sup_plugin_health implements the exported interface
// wasm-sup:plugin/health.
package export_wasm_sup_plugin_health

import "counter/gen/wasm_sup_plugin_health"

// Check answers the supervisor's health probe.
func Check() wasm_sup_plugin_health.Status {
	return wasm_sup_plugin_health.MakeStatusHealthy()
}
