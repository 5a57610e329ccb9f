// Counter: the example plugin, in JavaScript. It speaks the counter protocol
// of guest-examples/README.md, as the Rust, Python, C and Go versions do.
//
// Built by componentize-js (SpiderMonkey in StarlingMonkey), which turns the
// exports below into the `supervised-worker` world's exports and the WIT
// imports into the built-in modules imported here. In a function whose WIT
// result is `result<_, string>`, returning gives Ok and throwing a string
// gives Err; anything else thrown (an Error object) cannot be lowered into
// the string, so the call fails with an uncaught exception, which traps.

import { log } from 'wasi:logging/logging@0.1.0-draft';
import { open } from 'wasi:keyvalue/store@0.2.0-draft';
import { get as configGet } from 'wasi:config/store@0.2.0-rc.1';
import { send, selfInfo } from 'wasm-sup:plugin/mailbox@0.1.0';

const BUCKET = 'default';
const KEY = 'count';
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// The WIT error variant carried by an import's exception, as text.
function why(e) {
  const payload = e?.payload;
  if (payload === undefined) throw e; // not an import's error: a bug, so trap
  return payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
}

// Adds one to the stored count, logs it, and returns the new value.
function increment() {
  let bucket;
  try {
    bucket = open(BUCKET);
  } catch (e) {
    throw `open "${BUCKET}": ${why(e)}`;
  }
  let stored;
  try {
    stored = bucket.get(KEY);
  } catch (e) {
    throw `get "${KEY}": ${why(e)}`;
  }
  let current = 0;
  if (stored !== undefined) {
    const text = decoder.decode(stored);
    if (!/^[0-9]+$/.test(text)) throw `stored "${KEY}" is not a decimal number: ${JSON.stringify(text)}`;
    current = Number(text);
  }
  const next = current + 1;
  try {
    bucket.set(KEY, encoder.encode(String(next)));
  } catch (e) {
    throw `set "${KEY}": ${why(e)}`;
  }
  log('info', 'counter', `count is ${next}`);
  return next;
}

// Loops until the host stops it (fuel or the call's deadline), allocating nothing.
function spin() {
  for (;;) {}
}

// Allocates 1 MiB blocks and keeps them until the memory limit stops it.
function grow() {
  const blocks = [];
  for (;;) blocks.push(new Uint8Array(1 << 20).fill(1));
}

const reply = (text) => encoder.encode(text);

export const handler = {
  async handle(message) {
    const text = decoder.decode(message);
    const space = text.indexOf(' ');
    const command = space < 0 ? text : text.slice(0, space);
    const arg = space < 0 ? '' : text.slice(space + 1);
    switch (command) {
      case 'crash':
        increment();
        // The runtime reports the failed lowering ("expected a string"), not
        // this Error, before it aborts: say why first.
        console.error('crash requested');
        throw new Error('crash requested'); // an Error, not a string: traps
      case 'greet': {
        let greeting;
        try {
          greeting = configGet('greeting');
        } catch (e) {
          throw `config: ${why(e)}`;
        }
        return reply(greeting ?? 'hello');
      }
      case 'send': {
        const sp = arg.indexOf(' ');
        const to = sp < 0 ? arg : arg.slice(0, sp);
        const body = sp < 0 ? '' : arg.slice(sp + 1);
        try {
          send(to, encoder.encode(body));
        } catch (e) {
          throw why(e); // no-such-plugin, mailbox-full or too-large
        }
        return reply('sent');
      }
      case 'info': {
        const me = selfInfo();
        return reply(`${me.name} ${me.generation} ${me.restarts}`);
      }
      case 'print':
        console.log(arg);
        return reply('printed');
      case 'read-file':
        // StarlingMonkey gives scripts no file API (no fs, and fetch has no file: URLs).
        throw `read-file: this JavaScript runtime has no file API`;
      case 'env':
        // Nor an environment API (no process.env): the script sees no variables.
        return reply('0');
      case 'connect':
        // Nor sockets: fetch is the only network API, and it needs wasi:http.
        throw `connect: this JavaScript runtime has no socket API`;
      case 'spin':
        spin();
      case 'grow':
        grow();
      case 'sleep': {
        const ms = Number(arg);
        if (arg === '' || !Number.isInteger(ms) || ms < 0) throw `sleep: not a number: ${JSON.stringify(arg)}`;
        // No synchronous sleep in JavaScript; the bindings await the returned
        // promise, and the runtime's event loop waits on wasi:io/poll for the timer.
        await new Promise((resolve) => setTimeout(resolve, ms));
        return reply('slept');
      }
      default:
        return reply(String(increment()));
    }
  },
};

export const lifecycle = {
  init() {
    log('info', 'counter', 'counter starting');
  },
  shutdown() {
    log('info', 'counter', 'counter stopping');
  },
};

export const health = {
  check() {
    return { tag: 'healthy' };
  },
};
