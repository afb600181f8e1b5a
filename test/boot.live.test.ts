/**
 * How a cold boot starts the kernel. By default v86 enters the bzImage directly (no BIOS),
 * with a memory map of all of guest RAM; `firmware: "seabios"` boots the same image the
 * PC way. Both must give a working sandbox, and a kernel that cannot be booted directly
 * must fail the layer with a MachineError saying why, leaving no emulator behind.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { V86Box } from "../src/index.ts"
import { runningWorkerCount } from "../src/internal/v86Machine.ts"

const memTotalMiB = (meminfo: string) => Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo)?.[1]) / 1024

const coldBoot = (firmware: "direct" | "seabios") =>
  Effect.scoped(Effect.gen(function*() {
    const box = yield* Effect.provide(V86Box, yield* Layer.build(V86Box.layer({ warmStart: false, firmware })))
    return {
      meminfo: (yield* box.exec("cat /proc/meminfo")).stdout,
      cmdline: (yield* box.exec("cat /proc/cmdline")).stdout,
      work: yield* box.exec("seq 1 1000 | sha256sum | cut -c1-16; ls / | wc -l")
    }
  }))

describe("cold boot", () => {
  it.live("boots directly by default: the guest gets all of its 64 MiB but the legacy hole", () =>
    Effect.gen(function*() {
      const booted = yield* coldBoot("direct")
      // 64 MiB less the kernel's own reservations (~4 MiB); SeaBIOS's map left ~43 MiB.
      expect(memTotalMiB(booted.meminfo)).toBeGreaterThan(56)
      expect(booted.cmdline).toMatch(/root=\/dev\/sda/)
      expect(booted.work.exitCode).toBe(0)
      expect(booted.work.stdout).toMatch(/^[0-9a-f]{16}\n\d+\n$/)
    }), 120_000)

  it.live("firmware: \"seabios\" boots the same image through the BIOS", () =>
    Effect.gen(function*() {
      const booted = yield* coldBoot("seabios")
      expect(memTotalMiB(booted.meminfo)).toBeGreaterThan(32)
      expect(booted.work.exitCode).toBe(0)
      expect(booted.work.stdout).toBe((yield* coldBoot("direct")).work.stdout)
    }), 180_000)

  it.live("a kernel that is not a bzImage fails the layer with a MachineError saying so", () =>
    Effect.gen(function*() {
      const kernel = join(mkdtempSync(join(tmpdir(), "v86box-boot-")), "not-a-kernel")
      writeFileSync(kernel, Buffer.alloc(64 * 1024, 0x90))
      const error = yield* Effect.flip(Effect.scoped(Layer.build(V86Box.layer({ warmStart: false, assets: { kernel } }))))
      expect(error._tag).toBe("MachineError")
      expect(error.message).toMatch(/not a Linux bzImage/)
      for (let attempt = 0; attempt < 100 && runningWorkerCount() > 0; attempt++) yield* Effect.sleep("50 millis")
      expect(runningWorkerCount()).toBe(0)
    }), 60_000)
})
