// When an emulator worker posts the guest's console output to the caller's thread.
// Plain JavaScript, loaded by v86Worker.mjs.
//
// Every post wakes the caller's thread, and on a 2-core host the woken thread often
// runs in the emulator thread's place for a while: in a loop of `exec("true")` a post
// took p50 0.1-0.6 ms and p90 up to 2.5 ms of the emulator thread's time (it is called
// while the guest writes, so the guest waits too). The caller waits for only some of
// the agent's frames: a command's EXIT, the answers to its requests. Those go at once,
// with whatever was held before them; the rest (STARTED, streamed stdout and stderr,
// the kernel log) is held for up to HOLD_MILLIS or HOLD_BYTES. So `exec("true")` wakes
// the caller once (EXIT) instead of twice (STARTED, then EXIT).
import { concatBytes } from "./bytes.mjs"

/** The longest held output waits: short enough that streamed output still looks live. */
export const HOLD_MILLIS = 2
/** Held output of one kind is posted once it reaches this size (bulk output streams on). */
export const HOLD_BYTES = 65536

/**
 * Follows the agent's frames through its output (docs/protocol.md: a header of
 * `headerBytes` that starts with `magic`, has the type's byte at `typeOffset` and the
 * payload's length, u32 little-endian, at `lengthOffset`; then the payload) and tells
 * whether a chunk completed a frame of one of `urgentTypes`. Bytes that are not a frame (a guest's noise before the
 * agent's READY) are skipped up to the next magic; a chunk misread is only held a
 * little longer, never lost.
 */
export const frameEnds = ({ magic, headerBytes, typeOffset, lengthOffset, urgentTypes }) => {
  const urgent = new Set(urgentTypes)
  const header = new Uint8Array(headerBytes)
  let headerFill = 0
  let payloadLeft = 0
  let type = -1
  return (chunk) => {
    let completedUrgent = false
    let i = 0
    while (i < chunk.length) {
      if (payloadLeft > 0) {
        const skip = Math.min(payloadLeft, chunk.length - i)
        payloadLeft -= skip
        i += skip
        if (payloadLeft === 0 && urgent.has(type)) completedUrgent = true
        continue
      }
      const byte = chunk[i++]
      if (headerFill < magic.length && byte !== magic[headerFill]) {
        // Not the magic: start over, this byte perhaps being its first.
        headerFill = byte === magic[0] ? 1 : 0
        if (headerFill === 1) header[0] = byte
        continue
      }
      header[headerFill++] = byte
      if (headerFill < headerBytes) continue
      headerFill = 0
      type = header[typeOffset]
      const length = (header[lengthOffset] | (header[lengthOffset + 1] << 8) | (header[lengthOffset + 2] << 16) |
        (header[lengthOffset + 3] << 24)) >>> 0
      payloadLeft = length
      if (length === 0 && urgent.has(type)) completedUrgent = true
    }
    return completedUrgent
  }
}

/**
 * Output waiting to be posted, by kind ("agent", "serial"); each kind is posted in
 * order, as one message of its held chunks joined. `isUrgent(kind, chunk)` says whether
 * a chunk must go at once (and all held output with it).
 */
export const outbox = ({ post, isUrgent, holdMillis = HOLD_MILLIS, holdBytes = HOLD_BYTES }) => {
  const held = new Map()
  let heldBytes = 0
  let timer

  const flush = () => {
    clearTimeout(timer)
    timer = undefined
    heldBytes = 0
    for (const [kind, chunks] of held) {
      held.delete(kind)
      post(kind, join(chunks))
    }
  }

  const add = (kind, chunk) => {
    const chunks = held.get(kind)
    if (chunks === undefined) held.set(kind, [chunk])
    else chunks.push(chunk)
    heldBytes += chunk.length
    if (isUrgent(kind, chunk) || heldBytes >= holdBytes) return flush()
    timer ??= setTimeout(flush, holdMillis)
  }

  /** Drops what is held (its guest is gone). */
  const clear = () => {
    clearTimeout(timer)
    timer = undefined
    held.clear()
    heldBytes = 0
  }

  return { add, flush, clear }
}

/** One chunk as it is, several joined. */
const join = (chunks) => (chunks.length === 1 ? chunks[0] : concatBytes(chunks))
