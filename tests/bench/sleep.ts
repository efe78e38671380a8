/** The RSS bench's baseline: a Deno process that says it is ready and then only sleeps. */
console.log("ready");
await new Promise((resolve) => setTimeout(resolve, 60_000));
