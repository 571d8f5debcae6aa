"""One structured request to the embedded chat model."""

from bilevel_optuna.chat import ChatRequest
from bilevel_optuna.chat import get_chat_model

model = get_chat_model()  # the embedded SmolLM2: no network, no key
request = ChatRequest(
    messages=(
        {"role": "system", "content": "You tune an SVM. Answer in JSON."},
        {"role": "user", "content": "Tried C=1, kernel=rbf -> error 0.2. Propose the next trial."},
    ),
    json_schema={
        "type": "object",
        "properties": {"C": {"type": "number"}, "kernel": {"enum": ["rbf", "linear"]}},
        "required": ["C", "kernel"],
    },
    max_tokens=60,
    seed=0,  # same request, same seed, same answer on one machine
)
reply = model.complete(request)
print(reply.text, reply.prompt_tokens, reply.completion_tokens, f"{reply.latency_s:.1f} s")
