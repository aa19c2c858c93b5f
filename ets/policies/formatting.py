"""The root prompt of a real LLM policy: chat template or plain template, tokenized once.

Shared by the engine-backed policies (:mod:`ets.policies.vllm`, :mod:`ets.policies.openai`),
so the same preset gives the same prompt tokens whichever engine serves the model.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from ets.policies import PolicyConf
from ets.schema import num
from ets.types import Problem, Prompt


class PromptFormatter:
    """Formats a problem and tokenizes it with the policy's tokenizer (loaded on first use).

    Args:
        tokenizer: Tokenizer folder or hub id (``smollm2`` = the embedded SmolLM2).
        use_chat_template: Render ``[system], user`` with the tokenizer's chat template and
            the generation prompt; otherwise ``prompt_template`` is the whole prompt.
        prompt_template: The user message (chat) or the prompt (plain); ``{question}`` is
            replaced by the question.
        system_prompt: System message; empty or ``None`` sends none (some chat templates
            then insert their default one).
        chat_template_kwargs: Extra variables for the chat template (e.g. ``date_string``).
        response_prefix: Text the assistant's answer starts with (e.g. "Step 1:").
        revision, trust_remote_code: Tokenizer loading options.
        key: Config key named in errors.

    The same settings give the same prompt tokens as :class:`ets.policies.hf.HFPolicy`.
    """

    def __init__(
        self, tokenizer: str, use_chat_template: bool = True, prompt_template: str = "{question}",
        system_prompt: str | None = None, chat_template_kwargs: dict[str, Any] | None = None,
        response_prefix: str = "", revision: str | None = None, trust_remote_code: bool = False,
        key: str = "policy.model",
    ) -> None:
        if "{question}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{question}}', got {prompt_template!r}")
        self.name, self.use_chat_template, self.prompt_template = tokenizer, use_chat_template, prompt_template
        self.system_prompt, self.chat_template_kwargs = system_prompt, dict(chat_template_kwargs or {})
        self.response_prefix, self.revision, self.trust_remote_code = response_prefix, revision, trust_remote_code
        self.key = key
        self._tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer (resolved offline-safely on first use)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from ets.models import resolve_model

            path = resolve_model(self.name, self.revision, key=self.key)
            self._tokenizer = AutoTokenizer.from_pretrained(
                path, revision=None if path != self.name else self.revision,
                trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def text(self, problem: Problem) -> str:
        """The prompt text (chat markup included)."""
        user = self.prompt_template.replace("{question}", problem.question)
        if not self.use_chat_template:
            return user + self.response_prefix
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": user})
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      **self.chat_template_kwargs)
        return rendered + self.response_prefix

    def __call__(self, problem: Problem) -> Prompt:
        text = self.text(problem)
        # A chat template writes its own special tokens; a plain prompt gets the tokenizer's (BOS).
        ids = self.tokenizer.encode(text, add_special_tokens=not self.use_chat_template)
        return Prompt(text, tuple(ids))

    def decode(self, token_ids: tuple[int, ...]) -> str:
        """Text of generated tokens (special tokens dropped, as engines do)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)


class PromptedPolicyConf(PolicyConf):
    """Keys of the policies that format prompts with :class:`PromptFormatter` (transformers,
    vLLM, OpenAI-compatible servers)."""

    model: str  # a hub id or a folder; `smollm2`: the embedded SmolLM2-135M-Instruct
    tokenizer: str | None  # None: the model's
    revision: str | None
    trust_remote_code: bool
    use_chat_template: bool
    prompt_template: str  # the user message (chat) or the whole prompt (plain)
    system_prompt: str | None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    response_prefix: str  # text the answer starts with (e.g. "Step 1:")
    temperature: float = num(ge=0)
    top_p: float = num(gt=0, le=1)
