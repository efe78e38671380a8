/** An empty script: the CLI bench's baseline for Deno's own start-up and exit. */
export {};
