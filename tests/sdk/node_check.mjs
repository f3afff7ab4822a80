// openai-node and the Vercel AI SDK against the local server, as a developer's app would call it.
// Usage: node node_check.mjs BASE_URL API_KEY (run by scripts/clients-check.sh, which installs the packages
// under .tools/clients-node). Prints one JSON line per client and feature ({client, feature, ok, detail}) and
// exits 1 if any failed.
import OpenAI from "openai";
import { generateText, streamText, generateObject } from "ai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const [base, key] = process.argv.slice(2);
const model = "llama-3.1-8b";
const ask = [{ role: "user", content: "What is the weather in Pune?" }];
let failed = 0;

async function check(client, feature, run) {
  try {
    const detail = await run();
    console.log(JSON.stringify({ client, feature, ok: true, detail: String(detail ?? "") }));
  } catch (e) {
    failed += 1;
    console.log(JSON.stringify({ client, feature, ok: false, detail: String(e?.message ?? e).slice(0, 300) }));
  }
}

function expect(condition, what) {
  if (!condition) throw new Error(what);
}

const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
const weather = {
  type: "function",
  function: {
    name: "weather",
    parameters: { type: "object", properties: { city: { type: "string" }, days: { type: "integer" } }, required: ["city"] },
  },
};

await check("openai-node", "models.retrieve", async () => {
  const one = await openai.models.retrieve(model);
  expect(one.id === model, `retrieved ${JSON.stringify(one)}`);
});
await check("openai-node", "chat.completions.stream()", async () => {
  const stream = openai.chat.completions.stream({ model, messages: ask });
  let text = "";
  stream.on("content", (delta) => (text += delta));
  const done = await stream.finalChatCompletion();
  expect(text.length > 0 && done.choices[0].message.role === "assistant", `streamed ${JSON.stringify(done)}`);
});
await check("openai-node", "tools", async () => {
  const reply = await openai.chat.completions.create({ model, messages: ask, tools: [weather], max_tokens: 50 });
  const call = reply.choices[0].message.tool_calls?.[0];
  expect(typeof JSON.parse(call.function.arguments).city === "string", `arguments ${call?.function?.arguments}`);
});
await check("openai-node", "JSON mode", async () => {
  const reply = await openai.chat.completions.create({ model, messages: ask, response_format: { type: "json_object" } });
  JSON.parse(reply.choices[0].message.content);
});

// Our providers answer `json_schema` (structured outputs), so the provider may send it.
const compatible = createOpenAICompatible({
  name: "inferex",
  baseURL: `${base}/v1`,
  apiKey: key,
  supportsStructuredOutputs: true,
});
await check("AI SDK (openai-compatible)", "generateText", async () => {
  const { text } = await generateText({ model: compatible(model), prompt: "Namaste", maxRetries: 0 });
  expect(text.length > 0, "no text");
});
await check("AI SDK (openai-compatible)", "streamText", async () => {
  const result = streamText({ model: compatible(model), prompt: "Namaste", maxRetries: 0 });
  let text = "";
  for await (const part of result.textStream) text += part;
  expect(text.length > 0, "no streamed text");
});
await check("AI SDK (openai-compatible)", "generateObject", async () => {
  const { object } = await generateObject({
    model: compatible(model),
    schema: z.object({ city: z.string(), days: z.number() }),
    prompt: "Plan a trip",
    maxRetries: 0,
  });
  expect(typeof object.city === "string", `object ${JSON.stringify(object)}`);
});

const official = createOpenAI({ baseURL: `${base}/v1`, apiKey: key });
await check("AI SDK (openai)", "generateText (chat)", async () => {
  const { text } = await generateText({ model: official.chat(model), prompt: "Namaste", maxRetries: 0 });
  expect(text.length > 0, "no text");
});
await check("AI SDK (openai)", "default model (Responses API): clear 404", async () => {
  try {
    await generateText({ model: official(model), prompt: "Namaste", maxRetries: 0 });
  } catch (e) {
    expect(e.statusCode === 404 && String(e.responseBody).includes("unsupported_endpoint"), `error ${e.message}`);
    return "unsupported_endpoint";
  }
  throw new Error("the Responses API answered");
});

process.exit(failed ? 1 : 0);
