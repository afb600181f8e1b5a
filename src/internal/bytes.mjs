// Byte arrays. Plain JavaScript: the emulator worker imports it, and so do the SDK's
// TypeScript modules.

/**
 * The chunks' bytes, in order, in one new array.
 * @param {Iterable<Uint8Array>} chunks
 * @returns {Uint8Array}
 */
export const concatBytes = (chunks) => {
  let length = 0
  for (const chunk of chunks) length += chunk.length
  const bytes = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.length
  }
  return bytes
}
