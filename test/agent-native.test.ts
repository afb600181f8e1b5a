/**
 * The guest agent (image/agent/agent.c) built for the host and driven over pipes with
 * `--stdio`: the same frames the SDK sends over the virtio console, without a VM.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  decodeExit,
  decodePairs,
  encodeFrame,
  encodePairs,
  encodeU32,
  type Frame,
  FrameDecoder,
  FrameType
} from "../src/internal/protocol.ts"

const agentDir = fileURLToPath(new URL("../image/agent/", import.meta.url))
const agentBinary = `${agentDir}build/agent-native`

const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString("utf8")
const bytesOf = (value: string): Uint8Array => new TextEncoder().encode(value)
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface CommandResult {
  readonly frames: Array<Frame>
  readonly pid: number | undefined
  readonly stdout: Buffer
  readonly stderr: Buffer
  readonly exit: { code: number; signal: number } | undefined
  readonly error: string | undefined
}

/** One agent process, its frames in arrival order, and ways to wait for them. */
class Agent {
  readonly frames: Array<Frame> = []
  private readonly decoder = new FrameDecoder()
  private readonly listeners = new Set<() => void>()
  stderrText = ""
  exited: Promise<number | null>

  constructor(readonly process: ChildProcessWithoutNullStreams) {
    process.stdout.on("data", (chunk: Buffer) => {
      this.frames.push(...this.decoder.push(new Uint8Array(chunk)))
      for (const listener of this.listeners) listener()
    })
    process.stderr.on("data", (chunk: Buffer) => {
      this.stderrText += chunk.toString()
    })
    this.exited = new Promise((resolve) => process.on("exit", (code) => resolve(code)))
  }

  send(frame: Frame): void {
    this.process.stdin.write(encodeFrame(frame))
  }

  sendBytes(bytes: Uint8Array): void {
    this.process.stdin.write(bytes)
  }

  exec(channel: number, pairs: ReadonlyArray<readonly [string, string]>): void {
    this.send({ type: FrameType.EXEC, channel, payload: encodePairs(pairs) })
  }

  /** Resolves with the first frame (from the start) that matches, once it has arrived. */
  waitFor(matches: (frame: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.frames.find(matches)
        if (found === undefined) return
        cleanup()
        resolve(found)
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`no matching frame within ${timeoutMs} ms (${this.frames.length} frames, last ${JSON.stringify(this.frames.slice(-3).map((f) => [f.type, f.channel, f.payload.length]))}); agent stderr: ${this.stderrText}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.listeners.delete(check)
      }
      this.listeners.add(check)
      check()
    })
  }

  /** Waits until the channel ends (EXIT or ERROR) and sums up what it sent. */
  async result(channel: number, timeoutMs = 5000): Promise<CommandResult> {
    await this.waitFor(
      (frame) => frame.channel === channel && (frame.type === FrameType.EXIT || frame.type === FrameType.ERROR),
      timeoutMs
    )
    return this.summary(channel)
  }

  summary(channel: number): CommandResult {
    const frames = this.frames.filter((frame) => frame.channel === channel)
    const payloads = (type: number) =>
      Buffer.concat(frames.filter((frame) => frame.type === type).map((frame) => frame.payload))
    const started = frames.find((frame) => frame.type === FrameType.STARTED)
    const exit = frames.find((frame) => frame.type === FrameType.EXIT)
    const error = frames.find((frame) => frame.type === FrameType.ERROR)
    return {
      frames,
      pid: started && Buffer.from(started.payload).readUInt32LE(0),
      stdout: payloads(FrameType.STDOUT),
      stderr: payloads(FrameType.STDERR),
      exit: exit && decodeExit(exit.payload),
      error: error && text(error.payload)
    }
  }

  async run(channel: number, pairs: ReadonlyArray<readonly [string, string]>, timeoutMs = 5000) {
    this.exec(channel, pairs)
    return this.result(channel, timeoutMs)
  }

  outputBytes(channel: number): number {
    return this.frames
      .filter((frame) => frame.channel === channel && (frame.type === FrameType.STDOUT || frame.type === FrameType.STDERR))
      .reduce((sum, frame) => sum + frame.payload.length, 0)
  }

  stdinAcked(channel: number): number {
    return this.frames
      .filter((frame) => frame.channel === channel && frame.type === FrameType.STDIN_ACK)
      .reduce((sum, frame) => sum + Buffer.from(frame.payload).readUInt32LE(0), 0)
  }

  /** Closing the console makes the agent kill its commands and exit. */
  async stop(): Promise<number | null> {
    this.process.stdin.end()
    return this.exited
  }
}

const running: Array<Agent> = []

const startAgent = async (): Promise<Agent> => {
  const agent = new Agent(spawn(agentBinary, ["--stdio"], { stdio: ["pipe", "pipe", "pipe"], env: {} }))
  running.push(agent)
  await agent.waitFor((frame) => frame.type === FrameType.READY)
  return agent
}

/** Dead means gone or a zombie waiting for whoever adopted it. */
const isAlive = (pid: number): boolean => {
  const stat = `/proc/${pid}/stat`
  if (!existsSync(stat)) return false
  try {
    const state = readFileSync(stat, "utf8").split(") ")[1]?.[0]
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

/** Polls `condition` every 10 ms for up to `timeoutMs`: whether it came true. */
const waitUntil = async (condition: () => boolean, timeoutMs = 2000): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (condition()) return true
    await sleep(10)
  }
  return condition()
}

const waitUntilDead = (pid: number, timeoutMs = 1000): Promise<boolean> => waitUntil(() => !isAlive(pid), timeoutMs)

/**
 * A private PID namespace lets the agent run as PID 1, where power-off only ends the
 * namespace. As PID 1 it also says it is exiting on /dev/kmsg (or /dev/ttyS0): that is
 * for the guest's kernel log, not this machine's, so a mount namespace around it gets
 * /dev/null over both first (before the PID namespace, whose pids start at 1 with it).
 */
const asPid1 = (program: string, ...args: Array<string>) => [
  "--mount",
  "sh",
  "-c",
  'for dev in /dev/kmsg /dev/ttyS0; do if [ -e "$dev" ]; then mount --bind /dev/null "$dev" || exit; fi; done; exec unshare --pid --fork --mount-proc "$@"',
  "sh",
  program,
  ...args
]

const canRunAsPid1 = (() => {
  try {
    execFileSync("unshare", asPid1("true"), { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

beforeAll(() => {
  execFileSync("make", ["-C", agentDir, "agent-native"], { stdio: "pipe" })
}, 120_000)

afterEach(async () => {
  await Promise.all(running.splice(0).map((agent) => agent.stop()))
})

describe("agent startup", () => {
  it("sends READY with the protocol and agent versions before anything else", async () => {
    const agent = await startAgent()
    const first = agent.frames[0]!
    expect(first.type).toBe(FrameType.READY)
    expect(first.channel).toBe(0)
    expect(decodePairs(first.payload)).toEqual([["protocol", "1"], ["agent", "0.2.0"]])
  })

  it("answers PING with the same payload", async () => {
    const agent = await startAgent()
    agent.send({ type: FrameType.PING, channel: 0, payload: bytesOf("are you there") })
    const pong = await agent.waitFor((frame) => frame.type === FrameType.PONG)
    expect(text(pong.payload)).toBe("are you there")
  })

  it("answers INIT with INIT_OK, and a bad value with ERROR on channel 0", async () => {
    const agent = await startAgent()
    // Only entropy: time and hostname would change this host's clock and name.
    agent.send({ type: FrameType.INIT, channel: 0, payload: encodePairs([["entropy", "00ff10ab".repeat(8)]]) })
    await agent.waitFor((frame) => frame.type === FrameType.INIT_OK)
    agent.send({ type: FrameType.INIT, channel: 0, payload: encodePairs([["time", "soon"]]) })
    const error = await agent.waitFor((frame) => frame.type === FrameType.ERROR)
    expect(error.channel).toBe(0)
    expect(text(error.payload)).toContain("time")
  })

  it("exits and kills running commands when the console closes", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "sleep 100"]])
    await agent.waitFor((frame) => frame.type === FrameType.STARTED)
    const pid = agent.summary(1).pid!
    expect(await agent.stop()).toBe(0)
    expect(await waitUntilDead(pid)).toBe(true)
  })
})

describe.skipIf(!canRunAsPid1)("the agent as PID 1", () => {
  const startAsPid1 = async (): Promise<Agent> => {
    const agent = new Agent(
      spawn("unshare", asPid1(agentBinary, "--stdio"), { stdio: ["pipe", "pipe", "pipe"] })
    )
    running.push(agent)
    await agent.waitFor((frame) => frame.type === FrameType.READY)
    return agent
  }

  it("reaps orphaned processes", async () => {
    const agent = await startAsPid1()
    const spawned = await agent.run(1, [["cmd", "(sleep 0.1 &); (setsid sleep 0.2 &); echo $PPID"]])
    expect(text(spawned.stdout)).toBe("2\n")
    // Everything outside the listing command's own session (setsid makes its id $$) but
    // the fork server: a running one (built with a patched bash) or one the agent may be
    // starting (`bash -c "" bash PADDING`: the host's bash ends it at once, and the agent
    // tries again on an EXEC, up to three times). An attempt can also show between fork
    // and exec, or as a zombie until the agent reaps it, so the listing is taken until it
    // settles: orphans left unreaped never do.
    const others = async (channel: number): Promise<Array<Array<string>>> => {
      const listing = await agent.run(channel, [[
        "cmd",
        "ps -eo pid=,stat=,sid=,args= | awk -v me=$$ '$3 != me && $4 != \"v86box-fork-server\" && !($4 == \"bash\" && $5 == \"-c\" && $6 == \"bash\" && NF == 6)'"
      ]])
      return text(listing.stdout).trim().split("\n").map((line) => line.trim().split(/\s+/))
    }
    let lines = await others(2)
    for (let channel = 3; channel < 40 && lines.length !== 2; channel++) {
      await sleep(100)
      lines = await others(channel)
    }
    expect(lines.map(([pid]) => pid)).toEqual(["1", "2"])
    expect(lines.some(([, stat]) => stat!.startsWith("Z"))).toBe(false)
  })

  it("powers off when the agent process dies", async () => {
    const agent = await startAsPid1()
    agent.exec(1, [["cmd", "kill -9 $PPID"]])
    const exited = new Promise((resolve) => agent.process.on("exit", (code, signal) => resolve(signal ?? code)))
    // reboot(RB_POWER_OFF) in a PID namespace ends it with SIGINT, which unshare passes on.
    expect(await exited).toBe("SIGINT")
  })
})

describe("running commands", () => {
  it("runs echo hello: STARTED, stdout, then EXIT 0 as the last frame", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "echo hello"]])
    expect(result.pid).toBeGreaterThan(1)
    expect(text(result.stdout)).toBe("hello\n")
    expect(text(result.stderr)).toBe("")
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    expect(result.frames[0]!.type).toBe(FrameType.STARTED)
    expect(result.frames.at(-1)!.type).toBe(FrameType.EXIT)
  })

  it("keeps stderr apart and reports the exit code", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "echo out; echo e >&2; exit 3"]])
    expect(text(result.stdout)).toBe("out\n")
    expect(text(result.stderr)).toBe("e\n")
    expect(result.exit).toEqual({ code: 3, signal: 0 })
  })

  it("reports death by signal as 128 + signal", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "kill -TERM $$"]])
    expect(result.exit).toEqual({ code: 143, signal: 15 })
  })

  it("passes all 256 byte values through stdout exactly", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [
      ["cmd", "for i in $(seq 0 255); do printf \"\\\\$(printf %03o $i)\"; done"]
    ])
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    expect([...result.stdout]).toEqual(Array.from({ length: 256 }, (_, byte) => byte))
  })

  it("gives the command exactly the default environment plus the env pairs", async () => {
    const agent = await startAgent()
    const plain = await agent.run(1, [["cmd", "env | grep -v '^_=\\|^PWD=\\|^SHLVL=' | sort"]])
    expect(text(plain.stdout).split("\n")).toEqual([
      "HOME=/root",
      "LANG=C.UTF-8",
      "LOGNAME=root",
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "SHELL=/bin/bash",
      "TERM=dumb",
      "USER=root",
      ""
    ])
    const extra = await agent.run(2, [
      ["cmd", "echo \"$GREETING|$PATH|$TERM\""],
      ["env", "GREETING=hi there"],
      ["env", "PATH=/bin:/usr/bin"],
      ["env", "TERM=xterm"]
    ])
    expect(text(extra.stdout)).toBe("hi there|/bin:/usr/bin|xterm\n")
  })

  it("starts in the home directory, or in cwd when given", async () => {
    const agent = await startAgent()
    expect(text((await agent.run(1, [["cmd", "pwd"]])).stdout)).toBe("/root\n")
    expect(text((await agent.run(2, [["cmd", "pwd"], ["cwd", "/tmp"]])).stdout)).toBe("/tmp\n")
  })

  it("runs as the given uid and gid, with that user's HOME and USER", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "id -u; id -g; id -G; echo \"$HOME $USER $LOGNAME\"; pwd"], ["uid", "65534"]])
    expect(text(result.stdout)).toBe("65534\n65534\n65534\n/ 65534 65534\n/\n")
    const withGid = await agent.run(2, [["cmd", "id -u; id -g"], ["uid", "65534"], ["gid", "100"]])
    expect(text(withGid.stdout)).toBe("65534\n100\n")
  })

  it("answers a bad cwd with ERROR on the channel and no EXIT", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "echo never"], ["cwd", "/no/such/dir"]])
    expect(result.error).toContain("/no/such/dir")
    expect(result.error).toContain("No such file or directory")
    await sleep(300)
    expect(agent.summary(1).frames.map((frame) => frame.type)).toEqual([FrameType.ERROR])
    // The agent goes on working.
    expect(text((await agent.run(2, [["cmd", "echo still here"]])).stdout)).toBe("still here\n")
  })

  it("answers an EXEC without cmd or with bad fields with ERROR on the channel", async () => {
    const agent = await startAgent()
    expect((await agent.run(1, [["cwd", "/"]])).error).toContain("cmd")
    expect((await agent.run(2, [["cmd", "true"], ["uid", "root"]])).error).toContain("uid")
    expect((await agent.run(3, [["cmd", "true"], ["stdin", "file"]])).error).toContain("stdin")
    expect((await agent.run(4, [["cmd", "true"], ["env", "NOEQUALS"]])).error).toContain("env")
  })

  it("runs concurrent commands on separate channels, interleaved", async () => {
    const agent = await startAgent()
    const channels = Array.from({ length: 10 }, (_, index) => index + 1)
    // Each command waits until all ten have checked in: they can only finish together.
    const meeting = mkdtempSync(join(tmpdir(), "v86box-meeting-"))
    for (const channel of channels) {
      agent.exec(channel, [
        [
          "cmd",
          "touch \"$MEET/$NAME\"; until [ $(ls \"$MEET\" | wc -l) = 10 ]; do sleep 0.01; done; " +
          "for i in 1 2 3; do echo $NAME-$i; echo err-$NAME >&2; done; exit $NAME"
        ],
        ["env", `NAME=${channel}`],
        ["env", `MEET=${meeting}`]
      ])
    }
    const results = await Promise.all(channels.map((channel) => agent.result(channel, 20_000)))
    rmSync(meeting, { recursive: true, force: true })
    results.forEach((result, index) => {
      const name = index + 1
      expect(text(result.stdout)).toBe(`${name}-1\n${name}-2\n${name}-3\n`)
      expect(text(result.stderr)).toBe(`err-${name}\n`.repeat(3))
      expect(result.exit).toEqual({ code: name, signal: 0 })
    })
    const started = agent.frames.filter((frame) => frame.type === FrameType.STARTED)
    const firstExit = agent.frames.findIndex((frame) => frame.type === FrameType.EXIT)
    expect(started.length).toBe(10)
    expect(agent.frames.indexOf(started.at(-1)!)).toBeLessThan(firstExit)
  }, 30_000)
})

describe("stdin", () => {
  it("feeds a pipe from STDIN frames, acknowledges them, and closes it on an empty STDIN", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "cat; echo done >&2"], ["stdin", "pipe"]])
    agent.send({ type: FrameType.STDIN, channel: 1, payload: bytesOf("hi\n") })
    await agent.waitFor((frame) => frame.type === FrameType.STDIN_ACK)
    expect(agent.stdinAcked(1)).toBe(3)
    const everyByte = Uint8Array.from({ length: 256 }, (_, byte) => byte)
    agent.send({ type: FrameType.STDIN, channel: 1, payload: everyByte })
    agent.send({ type: FrameType.STDIN, channel: 1, payload: new Uint8Array(0) })
    const result = await agent.result(1)
    expect(result.stdout).toEqual(Buffer.concat([Buffer.from("hi\n"), everyByte]))
    expect(text(result.stderr)).toBe("done\n")
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    expect(agent.stdinAcked(1)).toBe(3 + 256)
  })

  it("takes more than a pipe's worth of stdin within the window", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "wc -c"], ["stdin", "pipe"]])
    const total = 1_000_000
    const chunk = new Uint8Array(16384).fill(0x61)
    let sent = 0
    while (sent < total) {
      // Keep at most the 65536-byte window unacknowledged, as the host does.
      const acked = sent - agent.stdinAcked(1)
      if (acked + chunk.length > 65536) {
        await agent.waitFor(() => sent - agent.stdinAcked(1) + chunk.length <= 65536)
        continue
      }
      const piece = chunk.subarray(0, Math.min(chunk.length, total - sent))
      agent.send({ type: FrameType.STDIN, channel: 1, payload: piece })
      sent += piece.length
    }
    agent.send({ type: FrameType.STDIN, channel: 1, payload: new Uint8Array(0) })
    const result = await agent.result(1)
    expect(text(result.stdout).trim()).toBe(String(total))
    expect(agent.stdinAcked(1)).toBe(total)
  })

  it("gives a command without stdin=pipe an immediate EOF", async () => {
    const agent = await startAgent()
    const started = Date.now()
    const result = await agent.run(1, [["cmd", "cat; read line; echo read=$?"]])
    expect(text(result.stdout)).toBe("read=1\n")
    expect(Date.now() - started).toBeLessThan(2000)
  })

  it("still acknowledges stdin after the command closed its end", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "exec <&-; echo closed; sleep 0.3; echo end"], ["stdin", "pipe"]])
    await agent.waitFor((frame) => frame.channel === 1 && frame.type === FrameType.STDOUT)
    agent.send({ type: FrameType.STDIN, channel: 1, payload: new Uint8Array(5000) })
    await agent.waitFor(() => agent.stdinAcked(1) === 5000)
    const result = await agent.result(1)
    expect(text(result.stdout)).toBe("closed\nend\n")
    expect(result.exit).toEqual({ code: 0, signal: 0 })
  })
})

describe("signals and process groups", () => {
  it("kills the whole group on SIGNAL 9 and ends with EXIT 137/9", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "sleep 100 & echo $!; sleep 100"]])
    await agent.waitFor((frame) => frame.channel === 1 && frame.type === FrameType.STDOUT)
    const background = Number(text(agent.summary(1).stdout))
    const main = agent.summary(1).pid!
    const signalled = Date.now()
    agent.send({ type: FrameType.SIGNAL, channel: 1, payload: encodeU32(9) })
    const result = await agent.result(1)
    expect(Date.now() - signalled).toBeLessThan(1000)
    expect(result.exit).toEqual({ code: 137, signal: 9 })
    expect(await waitUntilDead(main)).toBe(true)
    expect(await waitUntilDead(background)).toBe(true)
  })

  it("answers a late SIGNAL for a finished command with ERROR on its channel, and goes on", async () => {
    const agent = await startAgent()
    const result = await agent.run(1, [["cmd", "exit 4"]])
    agent.send({ type: FrameType.SIGNAL, channel: 1, payload: encodeU32(9) })
    const error = await agent.waitFor((frame) => frame.type === FrameType.ERROR)
    expect(error.channel).toBe(1)
    expect(result.exit).toEqual({ code: 4, signal: 0 })
    expect(text((await agent.run(2, [["cmd", "echo alive"]])).stdout)).toBe("alive\n")
  })

  it("delivers other signals to the group", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.01; done"]])
    await agent.waitFor((frame) => frame.channel === 1 && frame.type === FrameType.STDOUT)
    agent.send({ type: FrameType.SIGNAL, channel: 1, payload: encodeU32(15) })
    const result = await agent.result(1)
    expect(text(result.stdout)).toBe("ready\ngot TERM\n")
    expect(result.exit).toEqual({ code: 5, signal: 0 })
  })

  it("kills background processes left behind when the command exits", async () => {
    const agent = await startAgent()
    const started = Date.now()
    const result = await agent.run(1, [["cmd", "sleep 100 & echo $!; (sleep 100; echo late) &"]])
    expect(Date.now() - started).toBeLessThan(1000)
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    expect(await waitUntilDead(Number(text(result.stdout)))).toBe(true)
  })

  it("waits at most about 200 ms for a process that left the group and holds the pipes", async () => {
    const agent = await startAgent()
    const started = Date.now()
    // The short sleep lets setsid leave the group before the command ends and the group is killed.
    const result = await agent.run(1, [["cmd", "setsid sleep 5 & echo $!; sleep 0.1"]])
    const elapsed = Date.now() - started
    const escaped = Number(text(result.stdout))
    try {
      expect(result.exit).toEqual({ code: 0, signal: 0 })
      expect(elapsed).toBeGreaterThanOrEqual(250)
      expect(elapsed).toBeLessThan(1500)
    } finally {
      if (isAlive(escaped)) process.kill(escaped, "SIGKILL")
    }
  })
})

describe("output flow control", () => {
  it("ends a command whose escaped child never stops writing, once the held output is sent", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "setsid yes & echo $! >&2; sleep 0.1"]])
    await agent.waitFor(() => agent.outputBytes(1) === 262144)
    const writer = Number(text(agent.summary(1).stderr))
    try {
      // Past the command's exit and the 200 ms drain deadline, whatever the machine's load.
      expect(await waitUntilDead(agent.summary(1).pid!, 5000)).toBe(true)
      await sleep(300)
      agent.send({ type: FrameType.CREDIT, channel: 1, payload: encodeU32(1 << 30) })
      const result = await agent.result(1, 2000)
      expect(result.exit).toEqual({ code: 0, signal: 0 })
      // At most what the pipe held at the deadline came after the first 256 KiB.
      expect(agent.outputBytes(1) - 262144).toBeLessThanOrEqual(1 << 20)
    } finally {
      if (writer > 0 && isAlive(writer)) process.kill(writer, "SIGKILL")
    }
  })

  it("stops at the 262144-byte credit, goes on when CREDIT arrives, and ends when the credit is used up exactly", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "head -c 1048576 /dev/zero; echo done >&2"]])
    await agent.waitFor(() => agent.outputBytes(1) === 262144)
    await sleep(300)
    expect(agent.outputBytes(1)).toBe(262144)
    expect(agent.summary(1).exit).toBeUndefined()
    agent.send({ type: FrameType.CREDIT, channel: 1, payload: encodeU32(1048576 + 5 - 262144) })
    const result = await agent.result(1)
    expect(result.stdout.length).toBe(1048576)
    expect(result.stdout.every((byte) => byte === 0)).toBe(true)
    expect(text(result.stderr)).toBe("done\n")
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    expect(Math.max(...result.frames.map((frame) => frame.payload.length))).toBeLessThanOrEqual(65536)
  })

  it("sends EXIT only after the output that waited for credit", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "head -c 300000 /dev/zero"]])
    await agent.waitFor(() => agent.outputBytes(1) === 262144)
    await sleep(400)
    expect(agent.summary(1).exit).toBeUndefined()
    agent.send({ type: FrameType.CREDIT, channel: 1, payload: encodeU32(100000) })
    const result = await agent.result(1)
    expect(result.stdout.length).toBe(300000)
    expect(result.exit).toEqual({ code: 0, signal: 0 })
  })
})

describe("bad input", () => {
  it("answers a malformed frame with ERROR on channel 0 and keeps working", async () => {
    const agent = await startAgent()
    const badFrames = [
      bytesOf("garbage that is not a frame"),
      Uint8Array.from([0x56, 0xbb, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // unknown type
      Uint8Array.from([0x56, 0xbb, 0x02, 1, 0, 0, 0, 0, 0, 0, 0, 0]), // flags
      Uint8Array.from([0x56, 0xbb, 0x02, 0, 0, 0, 0, 0, 1, 0, 1, 0]) // length 65537
    ]
    for (const [index, bad] of badFrames.entries()) {
      agent.sendBytes(bad)
      agent.send({ type: FrameType.PING, channel: 0, payload: bytesOf(`ping ${index}`) })
      await agent.waitFor((frame) => frame.type === FrameType.PONG && text(frame.payload) === `ping ${index}`)
    }
    const errors = agent.frames.filter((frame) => frame.type === FrameType.ERROR)
    expect(errors.length).toBe(badFrames.length)
    expect(errors.every((frame) => frame.channel === 0)).toBe(true)
    expect(text((await agent.run(1, [["cmd", "echo ok"]])).stdout)).toBe("ok\n")
  })

  it("answers frames for an unknown channel with ERROR on that channel", async () => {
    const agent = await startAgent()
    agent.send({ type: FrameType.STDIN, channel: 42, payload: bytesOf("x") })
    const error = await agent.waitFor((frame) => frame.type === FrameType.ERROR)
    expect(error.channel).toBe(42)
  })

  it("refuses an EXEC on a channel in use, on channel 0", async () => {
    const agent = await startAgent()
    agent.exec(1, [["cmd", "sleep 0.3; echo first"]])
    agent.exec(1, [["cmd", "echo second"]])
    const result = await agent.result(1)
    expect(text(result.stdout)).toBe("first\n")
    const error = agent.frames.find((frame) => frame.type === FrameType.ERROR)
    expect(error?.channel).toBe(0)
  })

  it("refuses a PING above 64 bytes and a SIGNAL without a 4-byte payload", async () => {
    const agent = await startAgent()
    agent.send({ type: FrameType.PING, channel: 0, payload: new Uint8Array(65) })
    agent.exec(1, [["cmd", "sleep 0.2"]])
    agent.send({ type: FrameType.SIGNAL, channel: 1, payload: new Uint8Array(2) })
    const result = await agent.result(1)
    expect(result.exit).toEqual({ code: 0, signal: 0 })
    const errors = agent.frames.filter((frame) => frame.type === FrameType.ERROR)
    expect(errors.map((frame) => frame.channel)).toEqual([0, 0])
  })

  it("decodes a frame split at every byte boundary", async () => {
    const agent = await startAgent()
    const ping = encodeFrame({ type: FrameType.PING, channel: 0, payload: bytesOf("split") })
    for (let split = 1; split < ping.length; split++) {
      agent.sendBytes(ping.subarray(0, split))
      await sleep(2)
      agent.sendBytes(ping.subarray(split))
    }
    await agent.waitFor(() => agent.frames.filter((frame) => frame.type === FrameType.PONG).length === ping.length - 1)
    const exec = encodeFrame({ type: FrameType.EXEC, channel: 1, payload: encodePairs([["cmd", "echo byte by byte"]]) })
    for (const byte of exec) {
      agent.sendBytes(Uint8Array.of(byte))
      await sleep(1)
    }
    expect(text((await agent.result(1)).stdout)).toBe("byte by byte\n")
  })

  it("decodes many frames in one write", async () => {
    const agent = await startAgent()
    const frames = Array.from({ length: 50 }, (_, index) =>
      encodeFrame({ type: FrameType.PING, channel: 0, payload: bytesOf(String(index)) })
    )
    agent.sendBytes(Buffer.concat(frames))
    await agent.waitFor(() => agent.frames.filter((frame) => frame.type === FrameType.PONG).length === 50)
    const pongs = agent.frames.filter((frame) => frame.type === FrameType.PONG).map((frame) => text(frame.payload))
    expect(pongs).toEqual(Array.from({ length: 50 }, (_, index) => String(index)))
  })
})

/** Pids of the agent's live children (zombies included until reaped). */
const childrenOf = (agent: Agent): Array<number> =>
  readdirSync("/proc").filter((entry) => /^\d+$/.test(entry)).map(Number).filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === agent.process.pid
    } catch {
      return false
    }
  })

/*
 * The fork server needs image/bash's patched bash, which only the guest image has (its
 * behaviour is tested on a live VM: test/exec.live.test.ts). Natively the agent runs the
 * host's bash, which ends `bash -c ""` at once and never says it is ready: the fallback.
 */
describe("without a fork server (a bash lacking image/bash's patch)", () => {
  it("runs every command on the exec path, $$ its own pid, and stops starting servers", async () => {
    const agent = await startAgent()
    for (let channel = 1; channel <= 6; channel++) {
      const result = await agent.run(channel, [["cmd", "echo $$"]])
      expect(Number(text(result.stdout))).toBe(result.pid)
    }
    // Three failed servers at most, then none: nothing of the agent's is left running.
    expect(await waitUntil(() => childrenOf(agent).length === 0)).toBe(true)
  })

  it("delivers a SIGNAL sent right behind the EXEC, killing the command's whole group", async () => {
    const agent = await startAgent()
    // A duration no other process on the host uses, as ps sees the host's processes.
    agent.exec(1, [["cmd", "sleep 987.25 & sleep 987.25"]])
    agent.send({ type: FrameType.SIGNAL, channel: 1, payload: encodeU32(9) })
    const result = await agent.result(1)
    expect(result.exit).toEqual({ code: 137, signal: 9 })
    const leftovers = await agent.run(2, [["cmd", "ps -eo args= | grep -c '^sleep 987.25' || true"]])
    expect(text(leftovers.stdout)).toBe("0\n")
  })
})
