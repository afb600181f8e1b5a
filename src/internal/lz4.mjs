// LZ4's legacy frame format, the one Linux compresses a bzImage's kernel with (`lz4 -l`,
// followed by the kernel's 4-byte uncompressed size). Decoded on the host because the
// emulated CPU spends ~12 M instructions (~0.5 s of a cold boot) doing it itself.
// Plain JavaScript: the emulator's worker imports it.

const LEGACY_MAGIC = 0x184c2102

/** Whether `bytes` start like a legacy LZ4 frame (its magic number). */
export const isLz4Legacy = (bytes) =>
  bytes.byteLength >= 8 && new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true) === LEGACY_MAGIC

/**
 * Decodes `input` (a legacy LZ4 frame, as in a bzImage's payload) into `size` bytes.
 * Throws an Error if the data is not such a frame or does not decode to exactly `size`.
 */
export const decodeLz4Legacy = (input, size) => {
  if (!isLz4Legacy(input)) throw new Error("not an LZ4 legacy frame")
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength)
  const output = new Uint8Array(size)
  let inputAt = 4
  let outputAt = 0
  // Blocks until the output is full: what follows the last block (the kernel's size
  // field, another frame's magic) is not data.
  while (outputAt < size) {
    if (inputAt + 4 > input.byteLength) throw new Error("LZ4 data ends before the size it should unpack to")
    const blockSize = view.getUint32(inputAt, true)
    inputAt += 4
    if (blockSize === LEGACY_MAGIC) continue
    const blockEnd = inputAt + blockSize
    if (blockEnd > input.byteLength) throw new Error("an LZ4 block runs past the end of the data")
    outputAt = decodeBlock(input, inputAt, blockEnd, output, outputAt)
    inputAt = blockEnd
  }
  return output
}

/** One LZ4 block: sequences of literals then a back-reference. Returns the new output end. */
const decodeBlock = (input, at, end, output, out) => {
  const capacity = output.length
  while (at < end) {
    const token = input[at++]
    let literals = token >> 4
    if (literals === 15) {
      let more
      do {
        if (at >= end) throw corrupt()
        more = input[at++]
        literals += more
      } while (more === 255)
    }
    if (at + literals > end || out + literals > capacity) throw corrupt()
    // Short copies byte by byte: a subarray per sequence costs more than the copy.
    if (literals > 32) {
      output.set(input.subarray(at, at + literals), out)
      at += literals
      out += literals
    } else {
      for (let i = 0; i < literals; i++) output[out++] = input[at++]
    }
    if (at === end) break // the last sequence has literals only
    if (at + 2 > end) throw corrupt()
    const distance = input[at] | (input[at + 1] << 8)
    at += 2
    let length = (token & 15) + 4
    if ((token & 15) === 15) {
      let more
      do {
        if (at >= end) throw corrupt()
        more = input[at++]
        length += more
      } while (more === 255)
    }
    if (distance === 0 || distance > out || out + length > capacity) throw corrupt()
    let from = out - distance
    if (length > 32 && distance >= length) {
      output.copyWithin(out, from, from + length)
      out += length
    } else {
      // Byte by byte, which also repeats the last `distance` bytes when the match overlaps.
      const stop = out + length
      while (out < stop) output[out++] = output[from++]
    }
  }
  return out
}

const corrupt = () => new Error("corrupt LZ4 block")
