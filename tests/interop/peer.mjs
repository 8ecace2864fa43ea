// A js-libp2p peer driven by a test: one JSON command per line on stdin, one JSON answer per line on stdout.
// It is an independent libp2p implementation (TCP + Noise + yamux, QUIC via @chainsafe/libp2p-quic, identify,
// ping, Kademlia in server mode) used to check that a node interoperates, and to play a hostile peer: it
// writes whatever bytes the test gives it on /aivillage/mesh/1.0.0 streams.
//
// Answers: {"id": n, "ok": true, ...} or {"id": n, "ok": false, "error": "..."}; unsolicited events have
// "event" instead of "id" (ready, stream). Streams are numbered (sid); a stream's frames
// (length u32 BE ‖ bytes) are queued until read with read_frame.
import { createInterface } from 'node:readline'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { quic } from '@chainsafe/libp2p-quic'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'

const MESH = '/aivillage/mesh/1.0.0'
const MANY = 100000 // stream limits on our side: the node under test is the one that must enforce its own

const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (u8) => Buffer.from(u8).toString('hex')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0', '/ip4/127.0.0.1/udp/0/quic-v1'] },
  transports: [tcp(), quic()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionManager: { maxConnections: 1000 },
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({ protocol: '/ipfs/kad/1.0.0', clientMode: false }),
  },
})

const conns = new Map() // cid -> Connection
const streams = new Map() // sid -> {stream, frames: [], waiters: [], closed: null}
let nextCid = 1
let nextSid = 1

function track (stream, conn) {
  const sid = nextSid++
  const entry = { stream, frames: [], waiters: [], closed: null, conn }
  streams.set(sid, entry)
  const wake = () => { for (const w of entry.waiters.splice(0)) w() }
  ;(async () => {
    let buf = Buffer.alloc(0)
    try {
      for await (const chunk of stream) {
        buf = Buffer.concat([buf, Buffer.from(chunk.subarray())])
        while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
          const n = buf.readUInt32BE(0)
          entry.frames.push(buf.subarray(4, 4 + n))
          buf = buf.subarray(4 + n)
          wake()
        }
      }
      entry.closed = 'ended'
    } catch (err) {
      entry.closed = `error: ${err.name}: ${err.message}`
    }
    wake()
  })()
  return sid
}

await node.handle(MESH, (stream, connection) => {
  const sid = track(stream, connection)
  out({ event: 'stream', sid, remote: connection.remotePeer.toString(), addr: connection.remoteAddr.toString() })
}, { maxInboundStreams: MANY, maxOutboundStreams: MANY })

function conn (msg) {
  const c = conns.get(msg.cid)
  if (c === undefined) throw new Error(`no connection ${msg.cid}`)
  return c
}

function entry (msg) {
  const e = streams.get(msg.sid)
  if (e === undefined) throw new Error(`no stream ${msg.sid}`)
  return e
}

async function waitFor (e, ready, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (!ready()) {
    const left = deadline - Date.now()
    if (left <= 0) return false
    await new Promise((resolve) => {
      const t = setTimeout(resolve, left)
      e.waiters.push(() => { clearTimeout(t); resolve() })
    })
  }
  return true
}

async function send (stream, data) {
  if (!stream.send(data)) await stream.onDrain()
}

const commands = {
  async dial (msg) {
    const c = await node.dial(multiaddr(msg.addr))
    const cid = nextCid++
    conns.set(cid, c)
    return { cid, remote: c.remotePeer.toString(), addr: c.remoteAddr.toString() }
  },
  async ping (msg) {
    return { rtt_ms: await node.services.ping.ping(conn(msg).remotePeer) }
  },
  async identify (msg) {
    const r = await node.services.identify.identify(conn(msg))
    return { peer: r.peerId.toString(), protocols: r.protocols, agent: r.agentVersion ?? '', listen: r.listenAddrs.map(String) }
  },
  async open (msg) {
    // Open `n` mesh streams on one connection; each answer is a sid or the error that refused it.
    const c = conn(msg)
    const results = []
    for (let i = 0; i < (msg.n ?? 1); i++) {
      try {
        const s = await c.newStream(MESH, { maxOutboundStreams: MANY })
        results.push({ sid: track(s, c) })
      } catch (err) {
        results.push({ error: `${err.name}: ${err.message}` })
      }
    }
    return { streams: results }
  },
  async write (msg) {
    // Raw bytes (the test adds length prefixes itself, or not, as a hostile peer would).
    await send(entry(msg).stream, Buffer.from(msg.hex, 'hex'))
    return {}
  },
  async bulk (msg) {
    // `count` frames of `size` bytes each as fast as the stream accepts them (waiting only on drain).
    const e = entry(msg)
    const frame = Buffer.alloc(4 + msg.size, 0x5a)
    frame.writeUInt32BE(msg.size, 0)
    const started = Date.now()
    for (let i = 0; i < msg.count; i++) {
      if (e.stream.status !== 'open') throw new Error(`stream ${e.stream.status} after ${i} frames`)
      await send(e.stream, frame)
    }
    return { ms: Date.now() - started, status: e.stream.status }
  },
  async read_frame (msg) {
    const e = entry(msg)
    const ok = await waitFor(e, () => e.frames.length > 0 || e.closed !== null, msg.timeout_ms ?? 10000)
    if (e.frames.length > 0) return { hex: hex(e.frames.shift()) }
    return { closed: e.closed ?? (ok ? 'unknown' : 'timeout') }
  },
  async wait_closed (msg) {
    const e = entry(msg)
    await waitFor(e, () => e.closed !== null, msg.timeout_ms ?? 10000)
    return { closed: e.closed, status: e.stream.status }
  },
  async close_stream (msg) {
    await entry(msg).stream.close()
    return {}
  },
  async hangup (msg) {
    await conn(msg).close()
    conns.delete(msg.cid)
    return {}
  },
  async peers () {
    return { peers: node.getConnections().map((c) => ({ peer: c.remotePeer.toString(), status: c.status })) }
  },
  async stop () {
    await node.stop()
    setImmediate(() => process.exit(0))
    return {}
  },
}

out({ event: 'ready', peer: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

// Commands run concurrently (a read may wait while a write goes on); answers carry the command's id.
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue
  const msg = JSON.parse(line)
  const run = commands[msg.cmd]
  ;(async () => {
    try {
      if (run === undefined) throw new Error(`unknown command ${msg.cmd}`)
      out({ id: msg.id, ok: true, ...(await run(msg)) })
    } catch (err) {
      out({ id: msg.id, ok: false, error: `${err.name}: ${err.message}` })
    }
  })()
}
await node.stop()
process.exit(0)
