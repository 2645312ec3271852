#!/usr/bin/env python3
"""The baseline of bench/datacheck.sh: a plain Python dataset validator, one json.loads per line,
with the checks the upstream client's `collect_sft_jsonl_errors` makes as ../shared/UPSTREAM.md §3
describes them (written from that description, not copied): record an object with a messages list
of at least one message; each message an object with a non-empty string role, content a string,
list, object or null, tool_calls a list whose calls name a function (a string `arguments` must be
JSON), name/reasoning/raw_content strings; tools a list of named tools with a string description
and object parameters; metadata an object. Errors read `Line N: ...`, the first 20 kept.

usage: validate_upstream.py PATH   prints `python-json-loads <bytes> <examples> <seconds> <MB/s>`
"""
import json
import os
import sys
import time


def message_errors(i, m):
    if not isinstance(m, dict):
        return [f"message {i} is not an object"]
    errors = []
    role = m.get("role")
    if not isinstance(role, str) or not role:
        errors.append(f"message {i} has invalid role")
    content = m.get("content")
    if content is not None and not isinstance(content, (str, list, dict)):
        errors.append(f"message {i} has unsupported content type {type(content).__name__}")
    calls = m.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            errors.append(f"message {i} tool_calls must be a list")
        else:
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                holder = fn if isinstance(fn, dict) else (call if isinstance(call, dict) else {})
                if not isinstance(holder.get("name"), str) or not holder.get("name"):
                    errors.append(f"tool_call {j} missing function name")
                args = holder.get("arguments")
                if isinstance(args, str):
                    try:
                        json.loads(args)
                    except ValueError:
                        errors.append(f"tool_call {j} arguments are not valid JSON")
    for key in ("name", "reasoning", "raw_content"):
        if key in m and m[key] is not None and not isinstance(m[key], str):
            errors.append(f"message {i} {key} must be a string if present")
    return errors


def record_errors(record):
    if not isinstance(record, dict):
        return ["record is not an object"]
    messages = record.get("messages")
    if not isinstance(messages, list) or len(messages) < 1:
        return ["missing messages[] with at least 1 turns"]
    errors = []
    for i, m in enumerate(messages):
        errors.extend(message_errors(i, m))
    tools = record.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            errors.append("tools must be provided as a list when present")
        else:
            for i, tool in enumerate(tools):
                fn = tool.get("function", tool) if isinstance(tool, dict) else {}
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    errors.append(f"tool {i} missing name")
                    continue
                if "description" in fn and not isinstance(fn["description"], str):
                    errors.append(f"tool {i} description must be a string")
                if "parameters" in fn and not isinstance(fn["parameters"], dict):
                    errors.append(f"tool {i} parameters must be an object")
    if "metadata" in record and not isinstance(record["metadata"], dict):
        errors.append("metadata must be an object if present")
    return errors


def validate(path, max_errors=20):
    errors, examples = [], 0
    with open(path, "r", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            examples += 1
            try:
                record = json.loads(line)
            except ValueError as e:
                errors.append(f"Line {n}: invalid JSON ({e})")
                continue
            errors.extend(f"Line {n}: {e}" for e in record_errors(record))
            if len(errors) >= max_errors:
                break
    if examples == 0:
        errors.append("File contains no SFT examples")
    return examples, errors[:max_errors]


if __name__ == "__main__":
    path = sys.argv[1]
    start = time.perf_counter()
    examples, errors = validate(path)
    seconds = time.perf_counter() - start
    if errors:
        sys.exit(f"{path}: Dataset validation failed (showing first 20 issues):\n - " + "\n - ".join(errors))
    size = os.path.getsize(path)
    print(f"python-json-loads {size} {examples} {seconds:.3f} {size / 1e6 / seconds:.0f}")
