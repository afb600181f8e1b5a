/**
 * The host half of the guest filesystem, without a VM: quoting that bash reads back
 * exactly, errno classification of GNU tools' messages, and parsing of `stat` output.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Option from "effect/Option"
import * as fc from "fast-check"
import { execFileSync } from "node:child_process"
import { classify, parseStat, quote } from "../src/internal/guestFileSystem.ts"

describe("quote", () => {
  it.prop(
    "bash reads a quoted word back as exactly the text",
    [fc.string({ unit: fc.oneof(fc.constantFrom("'", "\"", "\\", "$", "`", "\n", " ", "*", "!", "-"), fc.fullUnicode()) })
      .filter((text) => !text.includes("\0"))],
    ([text]) => {
      const echoed = execFileSync("bash", ["-c", `printf '%s' ${quote(text)}`], { encoding: "utf8" })
      expect(echoed).toBe(text)
    },
    { fastCheck: { numRuns: 50 } }
  )
})

describe("classify", () => {
  it("names the errno from the tool's last words", () => {
    expect(classify("cat: /x: No such file or directory\n")).toEqual(
      expect.objectContaining({ code: "ENOENT", reason: "NotFound" })
    )
    expect(classify("mkdir: cannot create directory ‘/tmp’: File exists\n").reason).toBe("AlreadyExists")
    expect(classify("bash: line 1: /root/x: Permission denied\n").reason).toBe("PermissionDenied")
    expect(classify("chown: changing ownership of 'x': Operation not permitted\n").code).toBe("EPERM")
    expect(classify("rm: cannot remove '/tmp': Is a directory\n").reason).toBe("BadResource")
    expect(classify("bash: line 1: f: cannot overwrite existing file\n").code).toBe("EEXIST")
    expect(classify("rmdir: failed to remove 'a': Directory not empty\n")).toEqual(
      expect.objectContaining({ code: "ENOTEMPTY", reason: "Unknown" })
    )
    expect(classify("something else went wrong\n")).toEqual({ code: undefined, reason: "Unknown" })
  })

  it("a path that looks like an error message does not fool it: the last line decides", () => {
    expect(classify("warning: 'File exists'\ncat: /x: No such file or directory\n").code).toBe("ENOENT")
  })
})

describe("parseStat", () => {
  it("reads every field of a regular file", () => {
    const info = parseStat("81a4 3 1795697063.968000000 1795697064.5 1795697063.968000000 0 16 2 1 1000 100 0 4096 8\n")!
    expect(info.type).toBe("File")
    expect(info.mode).toBe(0o100644)
    expect(info.size).toBe(3n)
    expect(info.mtime).toEqual(Option.some(new Date(1795697064500)))
    expect(info.birthtime).toEqual(Option.none())
    expect([info.uid, info.gid, info.ino, info.nlink]).toEqual([Option.some(1000), Option.some(100), Option.some(2), Option.some(1)])
    expect(info.blksize).toEqual(Option.some(4096n))
  })

  it("knows directories, links, devices, and rejects garbage", () => {
    expect(parseStat("41ed 40 1 1 1 1 16 4 2 0 0 0 4096 0")!.type).toBe("Directory")
    expect(parseStat("21b6 0 1 1 1 1 5 3 1 0 0 259 4096 0")!.type).toBe("CharacterDevice")
    expect(parseStat("a1ff 4 1 1 1 1 16 5 1 0 0 0 4096 0")!.type).toBe("SymbolicLink")
    expect(parseStat("stat: cannot statx")).toBeUndefined()
  })
})
