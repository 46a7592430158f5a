#!/usr/bin/env python3
"""The baseline: an evaluation loop in the released code's style.

One process, one episode at a time, one request at a time, as the released
MPO/ETO scripts evaluate: for each task, reset the ALFWorld-protocol server,
assemble the first message in the released "first" format (instruction,
1-shot example, task), then per step call the chat model, parse the action
with `Action:\\s?(.*)`, step the environment and append the observation,
up to 30 steps. Written for this benchmark from the rules in the reference
README; standard library only.

    python3 bench/reference_loop.py --env http://127.0.0.1:8801 \\
        --chat http://127.0.0.1:8802/v1 --episodes 20
"""
import argparse
import json
import re
import urllib.request
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "released"


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def first_message(instruction, example, task):
    text = ""
    for m in example:
        text += m["content"] + ("\n" if m["role"] == "assistant" else "\n\n")
    return f"{instruction}\n---\nHere is an example.\n\n{text}\n---\n\nNow, it's your turn and here is the task.\n{task}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="http://127.0.0.1:8801")
    ap.add_argument("--chat", default="http://127.0.0.1:8802/v1")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=30)
    a = ap.parse_args()
    instruction = (PROMPTS / "alfworld_instruction.txt").read_text()
    icl = json.loads((PROMPTS / "alfworld_icl.json").read_text())
    total_reward, calls = 0.0, 0
    for game in range(a.episodes):
        sid = post(f"{a.env}/create", {})["id"]
        reset = post(f"{a.env}/reset", {"id": sid, "game": game, "world_type": "Text"})
        key = {"pick_and_place": "pick_and_place", "pick_clean_then_place": "pick_clean_then_place",
               "pick_heat_then_place": "pick_heat_then_place", "pick_cool_then_place": "pick_cool_then_place",
               "look_at_obj_in_light": "look_at_obj", "pick_two_obj": "pick_two_obj"}.get(reset.get("task_type"), "pick_and_place")
        messages = [{"role": "user", "content": first_message(instruction, icl[key][0], reset["observation"])}]
        reward = 0.0
        for _ in range(a.max_steps):
            out = post(f"{a.chat}/chat/completions", {
                "model": "fixed", "messages": messages, "temperature": 0, "max_tokens": 512,
                "stop": ["\nObservation:", "\nTask:", "\n---"]})
            calls += 1
            reply = out["choices"][0]["message"]["content"]
            messages.append({"role": "assistant", "content": reply})
            m = re.findall(r"Action:\s?(.*)", reply.strip(), re.DOTALL)
            if not m:
                messages.append({"role": "user", "content": "Observation: Error Input. Your input must contains 'Action: '"})
                continue
            step = post(f"{a.env}/step", {"id": sid, "action": m[0]})
            reward = float(step.get("reward", 0.0))
            messages.append({"role": "user", "content": "Observation: " + step["observation"]})
            if step.get("done"):
                break
        post(f"{a.env}/close", {"id": sid})
        total_reward += reward
    print(json.dumps({"episodes": a.episodes, "calls": calls, "avg_reward": total_reward / max(a.episodes, 1)}))


if __name__ == "__main__":
    main()
