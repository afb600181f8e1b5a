/**
 * The LZ4 legacy-frame decoder that unpacks the kernel on the host: literals, matches
 * (overlapping ones repeat bytes), long lengths, several blocks, and corrupt input that
 * must fail rather than produce a wrong kernel.
 */
import { describe, expect, it } from "@effect/vitest"
import { decodeLz4Legacy } from "../src/internal/lz4.mjs"

const MAGIC = [0x02, 0x21, 0x4c, 0x18]
const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24]
const frame = (...blocks: Array<Array<number>>) => new Uint8Array([...MAGIC, ...blocks.flatMap((block) => [...u32(block.length), ...block])])
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1")
const ascii = (s: string) => [...s].map((c) => c.charCodeAt(0))

describe("decodeLz4Legacy", () => {
  it("decodes literals and a back-reference", () => {
    // "abcd" then a match of 4 at distance 4, then the last literals "x".
    const block = [0x40, ...ascii("abcd"), 4, 0, 0x10, ...ascii("x")]
    expect(text(decodeLz4Legacy(frame(block), 9))).toBe("abcdabcdx")
  })

  it("repeats bytes when a match overlaps what it writes (run-length)", () => {
    // "a" then a match of 19 at distance 1: 20 a's, then "b".
    const block = [0x1f, ...ascii("a"), 1, 0, 0, 0x10, ...ascii("b")]
    expect(text(decodeLz4Legacy(frame(block), 21))).toBe("a".repeat(20) + "b")
  })

  it("reads long literal and match lengths (255-continued) and several blocks", () => {
    const literals = Array.from({ length: 300 }, (_, i) => 32 + (i % 90))
    // 300 literals = 15 + 255 + 30; match 600 at distance 300 = 4 + 15 + 255 + 255 + 71.
    const first = [0xff, 255, 30, ...literals, 0x2c, 0x01, 255, 255, 71, 0x00]
    const second = [0x30, ...ascii("end")]
    const out = decodeLz4Legacy(frame(first, second), 903)
    const expected = String.fromCharCode(...literals)
    expect(text(out)).toBe(expected + expected + expected + "end")
  })

  it("stops at the size it was asked for, ignoring a trailing size field", () => {
    const input = new Uint8Array([...frame([0x30, ...ascii("abc")]), ...u32(3)])
    expect(text(decodeLz4Legacy(input, 3))).toBe("abc")
  })

  it("refuses corrupt or truncated input", () => {
    expect(() => decodeLz4Legacy(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), 4)).toThrow(/not an LZ4 legacy frame/)
    // A match reaching back before the start of the output.
    expect(() => decodeLz4Legacy(frame([0x10, ...ascii("a"), 9, 0, 0x10, ...ascii("b")]), 10)).toThrow(/corrupt/)
    // Decodes to less than promised and the data ends.
    expect(() => decodeLz4Legacy(frame([0x30, ...ascii("abc")]), 10)).toThrow(/ends before/)
    // A block longer than the data.
    expect(() => decodeLz4Legacy(new Uint8Array([...MAGIC, ...u32(100), 0x10, 0x61]), 1)).toThrow(/past the end/)
    // More output than the size asked for.
    expect(() => decodeLz4Legacy(frame([0x50, ...ascii("abcde")]), 3)).toThrow(/corrupt/)
  })
})
