/**
 * Isolation: what the guest cannot see of the host. No network interface but `lo`, none
 * of the host's environment, none of its files, no host directory mounted by default.
 * (The emulator runs in a worker thread of the caller's process, not a child process, so
 * the Node permission-model item does not apply: see docs/reliability.md.)
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { randomBytes } from "node:crypto"
import { rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { V86Box } from "../../src/index.ts"
import { report } from "./support.ts"

// Set before the sandbox boots: whatever the guest could inherit from the host, it has.
const canary = `v86box-canary-${randomBytes(8).toString("hex")}`
process.env.V86BOX_RELIABILITY_CANARY = canary
const hostFile = join(tmpdir(), canary)
writeFileSync(hostFile, canary)
process.on("exit", () => rmSync(hostFile, { force: true }))

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("isolation", (it) => {
  it.effect("the only network interface is lo", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const interfaces = yield* box.exec("ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
      expect(interfaces.stdout).toBe("lo\nlo\n")
    }))

  it.effect("no host environment variable reaches a command or any guest process", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const env = yield* box.exec("env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")
      expect(env.stdout).not.toContain(canary)
      expect(env.stdout).not.toContain("V86BOX_RELIABILITY_CANARY")
    }))

  it.effect("a file the host just made is nowhere in the guest's filesystem", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const found = yield* box.exec(`find / -xdev -name '${canary}*' 2>/dev/null; find /dev /run /tmp -name '${canary}*'`, {
        timeout: "120 seconds"
      })
      expect(found).toMatchObject({ stdout: "" })
    }), 180_000)

  it.effect("no host directory is mounted by default; the 9p device mounted by hand holds no host file", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const mounts = yield* box.exec("cat /proc/mounts")
      expect(mounts.stdout).not.toMatch(/\b9p\b/)
      // Guest root can mount the device itself. It serves only the sandbox's own staging
      // directory for file uploads (empty at rest) and the mounts the user asked for.
      const byHand = yield* box.exec(
        "mkdir -p /mnt/probe && mount -t 9p -o trans=virtio,version=9p2000.L host9p /mnt/probe 2>&1; echo \"mount exit $?\"; " +
          "find /mnt/probe -mindepth 1 -maxdepth 1 | sed 's/^/entry /'; find /mnt/probe -mindepth 1 ! -type d | sed 's/^/file /'; " +
          "umount /mnt/probe 2>/dev/null; true"
      )
      report("9p by hand", { output: byHand.stdout })
      expect(byHand.stdout).not.toContain(canary)
      expect(byHand.stdout).not.toMatch(/^file /m)
    }))
})
