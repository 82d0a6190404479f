'use strict';
// memdiag preload agent, loaded with `node --require agent.js --expose-gc` by
// memdiag.spawn_node(). It reports process.memoryUsage() to the Python parent over
// the IPC channel (NODE_CHANNEL_FD) every MEMDIAG_NODE_INTERVAL_MS and on request, and
// runs a full garbage collection on request, replying with the figures before and after.
//
// Its messages use cmd "NODE_MEMDIAG": node delivers messages whose cmd starts with
// "NODE_" as 'internalMessage', so a program's own process.on('message') handlers never
// see them. It keeps nothing alive: its timer is unref'd, and it never refs the channel
// (node refs it only for 'message'/'disconnect' listeners, the program's own; an explicit
// process.channel.unref() here would stop those from keeping the program alive).
(function memdiagAgent() {
  // Children of this process must not inherit the agent: restore the original options.
  if (process.env.MEMDIAG_NODE_OPTIONS_ORIG !== undefined) {
    const orig = process.env.MEMDIAG_NODE_OPTIONS_ORIG;
    if (orig) process.env.NODE_OPTIONS = orig;
    else delete process.env.NODE_OPTIONS;
    delete process.env.MEMDIAG_NODE_OPTIONS_ORIG;
  }
  const enabled = process.env.MEMDIAG_NODE_AGENT === '1';
  const intervalMs = Math.max(50, Number(process.env.MEMDIAG_NODE_INTERVAL_MS) || 1000);
  delete process.env.MEMDIAG_NODE_AGENT;
  delete process.env.MEMDIAG_NODE_INTERVAL_MS;
  if (!enabled || typeof process.send !== 'function') return;

  const CMD = 'NODE_MEMDIAG';
  function usage() {
    const m = process.memoryUsage();
    return {
      rss: m.rss,
      heapTotal: m.heapTotal,
      heapUsed: m.heapUsed,
      external: m.external,
      arrayBuffers: m.arrayBuffers,
    };
  }
  function send(msg) {
    if (!process.connected) return;
    msg.cmd = CMD;
    try {
      process.send(msg);
    } catch (e) {
      // The channel closed under us: the parent is gone or disconnected; stay quiet.
    }
  }
  process.on('internalMessage', (m) => {
    if (!m || m.cmd !== CMD) return;
    if (m.op === 'usage') {
      send({ op: 'usage', id: m.id, usage: usage() });
    } else if (m.op === 'gc') {
      const before = usage();
      const t0 = process.hrtime.bigint();
      const ok = typeof global.gc === 'function';
      if (ok) global.gc();
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      send({ op: 'gc', id: m.id, ok, before, after: usage(), ms });
    }
  });
  const timer = setInterval(() => send({ op: 'usage', usage: usage() }), intervalMs);
  timer.unref();
  send({ op: 'hello', pid: process.pid, node: process.version, gc: typeof global.gc === 'function', usage: usage() });
})();
