// Package export_wasm_sup_plugin_handler implements the exported interface
// wasm-sup:plugin/handler: the counter protocol of guest-examples/README.md.
// Every other message increments the key `count` in bucket `default`
// (decimal ASCII) and the reply is the new count; `crash` increments it and
// then panics, so the supervisor discards the write and restarts the plugin;
// the remaining commands show configuration, the mailbox, guest output, the
// sandbox and the resource limits.
package export_wasm_sup_plugin_handler

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	config "counter/gen/wasi_config_store"
	store "counter/gen/wasi_keyvalue_store"
	logging "counter/gen/wasi_logging_logging"
	mailbox "counter/gen/wasm_sup_plugin_mailbox"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

const (
	bucketName = "default"
	key        = "count"
)

type reply = witTypes.Result[[]uint8, string]

func ok(text string) reply {
	return witTypes.Ok[[]uint8, string]([]uint8(text))
}

func fail(text string) reply {
	return witTypes.Err[[]uint8, string](text)
}

// Handle answers one message.
func Handle(message []uint8) reply {
	command, arg, _ := strings.Cut(string(message), " ")
	switch command {
	case "crash":
		if _, err := increment(); err != nil {
			return fail(err.Error())
		}
		panic("crash requested")
	case "greet":
		got := config.Get("greeting")
		if got.IsErr() {
			return fail("config: " + configError(got.Err()))
		}
		return ok(got.Ok().SomeOr("hello"))
	case "send":
		to, body, _ := strings.Cut(arg, " ")
		if sent := mailbox.Send(to, []uint8(body)); sent.IsErr() {
			return fail(sendError(sent.Err()))
		}
		return ok("sent")
	case "info":
		me := mailbox.SelfInfo()
		return ok(fmt.Sprintf("%s %d %d", me.Name, me.Generation, me.Restarts))
	case "print":
		// os.Stdout is unbuffered: the line is written when Println returns.
		if _, err := fmt.Println(arg); err != nil {
			return fail(err.Error())
		}
		return ok("printed")
	case "read-file":
		contents, err := os.ReadFile(arg)
		if err != nil {
			return fail(err.Error())
		}
		return witTypes.Ok[[]uint8, string](contents)
	case "env":
		return ok(strconv.Itoa(len(os.Environ())))
	case "connect":
		conn, err := net.Dial("tcp", arg)
		if err != nil {
			return fail(err.Error())
		}
		conn.Close()
		return ok("connected")
	case "spin":
		spin()
	case "grow":
		grow()
	case "sleep":
		ms, err := strconv.ParseUint(arg, 10, 63)
		if err != nil {
			return fail(fmt.Sprintf("sleep: not a number: %q", arg))
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return ok("slept")
	}
	count, err := increment()
	if err != nil {
		return fail(err.Error())
	}
	return ok(strconv.FormatUint(count, 10))
}

// increment adds one to the stored count, logs it, and returns the new value.
func increment() (uint64, error) {
	opened := store.Open(bucketName)
	if opened.IsErr() {
		return 0, fmt.Errorf("open %q: %s", bucketName, keyvalueError(opened.Err()))
	}
	bucket := opened.Ok()
	defer bucket.Drop()

	got := bucket.Get(key)
	if got.IsErr() {
		return 0, fmt.Errorf("get %q: %s", key, keyvalueError(got.Err()))
	}
	var current uint64
	if stored := got.Ok(); stored.IsSome() {
		var err error
		current, err = strconv.ParseUint(string(stored.Some()), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stored %q is not a decimal number: %q", key, stored.Some())
		}
	}
	if current == ^uint64(0) {
		return 0, fmt.Errorf("count overflowed")
	}
	next := current + 1
	if set := bucket.Set(key, []uint8(strconv.FormatUint(next, 10))); set.IsErr() {
		return 0, fmt.Errorf("set %q: %s", key, keyvalueError(set.Err()))
	}
	logging.Log(logging.LevelInfo, "counter", fmt.Sprintf("count is %d", next))
	return next, nil
}

func keyvalueError(e store.Error) string {
	switch e.Tag() {
	case store.ErrorNoSuchStore:
		return "no-such-store"
	case store.ErrorAccessDenied:
		return "access-denied"
	default:
		return fmt.Sprintf("other(%s)", e.Other())
	}
}

func configError(e config.Error) string {
	if e.Tag() == config.ErrorUpstream {
		return fmt.Sprintf("upstream(%s)", e.Upstream())
	}
	return fmt.Sprintf("io(%s)", e.Io())
}

func sendError(e mailbox.SendError) string {
	switch e.Tag() {
	case mailbox.SendErrorNoSuchPlugin:
		return "no-such-plugin"
	case mailbox.SendErrorMailboxFull:
		return "mailbox-full"
	default:
		return "too-large"
	}
}

// spins counts the iterations of spin; a package-level variable, so that the
// loop has an effect the compiler must keep.
var spins uint64

// spin loops until the host stops it (fuel or the call's deadline).
func spin() {
	for {
		spins++
	}
}

// blocks keeps every block grow allocates reachable.
var blocks [][]byte

// grow allocates 1 MiB blocks, touches them and keeps them, until the memory
// limit stops it. It writes one byte per 4 KiB: a byte-by-byte loop costs
// enough fuel to run out of fuel before memory.
func grow() {
	for {
		block := make([]byte, 1<<20)
		for i := 0; i < len(block); i += 4096 {
			block[i] = 1
		}
		blocks = append(blocks, block)
	}
}
