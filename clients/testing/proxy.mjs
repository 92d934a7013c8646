// Test support: a TCP proxy in front of the server that can cut every
// connection at once (an abrupt drop, no close frame) or freeze them (a
// half-dead connection that carries nothing, as behind a lost NAT entry).

import net from "node:net";

export async function startProxy(targetPort) {
  const pairs = new Set();
  let accepted = 0;
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/v1/ws`,
    /** Connections accepted so far. */
    get accepted() {
      return accepted;
    },
    /** Open connections. */
    get open() {
      return pairs.size;
    },
    /** While on, new connections are closed at once (the server looks down). */
    refuse(on) {
      refusing = on;
    },
    /** Drops every open connection abruptly (the client sees 1006). */
    cut() {
      for (const { client, upstream } of [...pairs]) {
        client.resetAndDestroy?.() ?? client.destroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    /** Stops carrying bytes on every open connection, without closing it. */
    freeze() {
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    /** Stops carrying bytes from the server to the client only (requests still arrive). */
    freezeReplies() {
      for (const { client, upstream } of pairs) {
        upstream.unpipe(client);
        upstream.pause();
      }
    },
    async close() {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      pairs.clear();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
