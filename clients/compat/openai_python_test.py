"""OpenAI's official Python SDK (`openai`, pinned in requirements.txt),
unchanged, pointed at Skald's OpenAI-compatible API: what an existing
Python application does when it swaps its base URL for Skald's.

Run by openai-python.test.mjs, which starts the real skald binary in front
of the load-test harness's mock upstream and passes SKALD_HTTP (the server's
base URL) and SKALD_JWT_SECRET (to mint tokens, HS256 as the server's own).
Standard library and the SDK only; nothing is skipped.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import unittest
import urllib.request

import openai

HTTP = os.environ["SKALD_HTTP"]
SECRET = os.environ["SKALD_JWT_SECRET"]
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
HI = [{"role": "user", "content": "hi"}]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str) -> str:
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 600}).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def sdk(sub: str, api_key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{HTTP}/v1", api_key=api_key or token(sub), max_retries=0)


def get(sub: str, path: str):
    request = urllib.request.Request(f"{HTTP}{path}", headers={"authorization": f"Bearer {token(sub)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def history(sub: str) -> list:
    """The messages of the user's newest conversation."""
    newest = get(sub, "/v1/conversations")["conversations"][0]["id"]
    return get(sub, f"/v1/conversations/{newest}/messages")["messages"]


class PythonSdk(unittest.TestCase):
    def test_models_list_gives_the_bots(self):
        ids = [model.id for model in sdk("py-lister").models.list()]
        self.assertIn("default", ids)
        self.assertIn("chat", ids)

    def test_a_streamed_completion_is_the_stored_answer_with_its_usage(self):
        stream = sdk("py-stream").chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Bonjour par le SDK Python"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, finish, usage = "", None, None
        for chunk in stream:
            if chunk.usage:
                self.assertEqual(chunk.choices, [])
                usage = chunk.usage
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        self.assertEqual(finish, "stop")
        self.assertEqual(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens)
        self.assertEqual([m["content"] for m in history("py-stream")], ["Bonjour par le SDK Python", text])

    def test_a_plain_completion_continued_through_its_conversation_header(self):
        client = sdk("py-plain")
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "first"}]
        )
        first = raw.parse()
        self.assertEqual(first.object, "chat.completion")
        self.assertEqual(first.choices[0].finish_reason, "stop")
        conversation = raw.headers["x-skald-conversation"]
        again = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=[{"role": "user", "content": "second"}],
            extra_headers={"X-Skald-Conversation": conversation},
        )
        self.assertEqual(again.headers["x-skald-conversation"], conversation)
        self.assertEqual([m["content"] for m in history("py-plain")][0::2], ["first", "second"])

    def test_a_tool_call_passes_through_and_its_result_is_answered(self):
        client = sdk("py-tools")
        question = "weather in Nantes?"
        stream = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": question}],
            tools=WEATHER,
            tool_choice="auto",
            stream=True,
        )
        call_id, name, arguments, finish = None, "", "", None
        for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    self.assertEqual(call.index, 0)
                    call_id = call_id or call.id
                    name += call.function.name or ""
                    arguments += call.function.arguments or ""
                finish = choice.finish_reason or finish
        self.assertEqual(finish, "tool_calls")
        self.assertEqual(name, "weather")
        self.assertEqual(json.loads(arguments), {"query": question})
        stored = history("py-tools")[1]["tool_calls"]
        self.assertEqual(
            stored,
            [{"id": call_id, "type": "function", "function": {"name": "weather", "arguments": arguments}}],
        )
        answer = client.chat.completions.create(
            model="chat",
            tools=WEATHER,
            messages=[
                {"role": "user", "content": question},
                {"role": "assistant", "content": None, "tool_calls": stored},
                {"role": "tool", "tool_call_id": call_id, "content": "rain, 12 C"},
            ],
        )
        self.assertEqual(answer.choices[0].finish_reason, "stop")
        tool = history("py-tools")[0]
        self.assertEqual((tool["role"], tool["tool_call_id"], tool["content"]), ("tool", call_id, "rain, 12 C"))

    def test_closing_the_stream_mid_answer_stores_it_cancelled(self):
        stream = sdk("py-close").chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "a long answer"}], stream=True
        )
        text = ""
        for chunk in stream:
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
            if text:
                break
        stream.close()
        deadline = time.monotonic() + 10
        while True:
            answer = history("py-close")[1]
            if answer["finish_reason"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(answer["finish_reason"], "cancelled")
        self.assertTrue(answer["content"].startswith(text))
        self.assertLess(answer["usage"]["completion_tokens"], 40)

    def test_every_error_is_the_sdks_own_exception(self):
        def failure(client, **request):
            with self.assertRaises(openai.APIStatusError) as caught:
                client.chat.completions.create(**{"model": "chat", "messages": HI, **request})
            return caught.exception

        cases = [
            (failure(sdk("py-e", api_key="not-a-token")), openai.AuthenticationError, 401, "unauthorized"),
            (
                failure(sdk("py-e"), messages=[{"role": "system", "content": "obey"}, *HI]),
                openai.BadRequestError,
                400,
                "invalid_request",
            ),
            (failure(sdk("py-e"), model="no-such-bot"), openai.NotFoundError, 404, "not_found"),
            (failure(sdk("py-e"), model="broken"), openai.InternalServerError, 502, "upstream_error"),
            (failure(sdk("py-e"), model="hanging"), openai.InternalServerError, 504, "upstream_timeout"),
        ]
        spender = sdk("py-spender")
        spender.chat.completions.create(model="spent", messages=HI)
        cases.append((failure(spender, model="spent"), openai.APIStatusError, 402, "quota_exceeded"))
        limited = sdk("py-limited")
        for _ in range(3):
            limited.chat.completions.create(model="chat", messages=HI)
        rate_limited = failure(limited)
        cases.append((rate_limited, openai.RateLimitError, 429, "rate_limited"))
        self.assertGreaterEqual(int(rate_limited.response.headers["retry-after"]), 1)
        for error, kind, status, code in cases:
            with self.subTest(status=status):
                self.assertIsInstance(error, kind)
                self.assertEqual(error.status_code, status)
                self.assertEqual(error.code, code)


if __name__ == "__main__":
    unittest.main(verbosity=2)
