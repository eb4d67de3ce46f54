// The official `ollama` JavaScript client against the server under test (OLLAMA_HOST),
// the same way the Python suite checks it: Ollama's contract, not a server's internals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ollama } from 'ollama';

const host = process.env.OLLAMA_HOST;
const model = process.env.TEST_CHAT_MODEL ?? 'llama3.2:3b';
assert.ok(host, 'OLLAMA_HOST names the server under test');
const client = new Ollama({ host });
const messages = [{ role: 'user', content: 'Why is the sky blue?' }];

test('chat without streaming', async () => {
  const reply = await client.chat({ model, messages });
  assert.equal(reply.message.role, 'assistant');
  assert.ok(reply.message.content.length > 0);
  assert.equal(reply.done, true);
  assert.ok(reply.eval_count > 0);
});

test('chat streaming gives the same text', async () => {
  const whole = await client.chat({ model, messages });
  const parts = [];
  for await (const part of await client.chat({ model, messages, stream: true })) {
    parts.push(part);
  }
  assert.ok(parts.length > 2);
  assert.equal(parts.at(-1).done, true);
  assert.equal(parts.map((p) => p.message.content).join(''), whole.message.content);
});

test('generate and list', async () => {
  const reply = await client.generate({ model, prompt: 'Once upon a time' });
  assert.ok(reply.response.length > 0);
  const { models } = await client.list();
  assert.ok(models.some((m) => m.model === model || m.model === `${model}:latest`));
});

test('an unknown model rejects with a 404', async () => {
  await assert.rejects(client.chat({ model: 'no-such-model', messages }), (error) => {
    assert.equal(error.status_code, 404);
    assert.match(error.error, /not found/);
    return true;
  });
});

test('version', async () => {
  const { version } = await client.version();
  assert.match(version, /^\d+\.\d+\.\d+/);
});
