"""What a critique or a demonstration reads of a rollout: its recorded calls, decoded.

The recorded data are token ids (``LLMRequest.prompt_token_ids`` + ``response_token_ids``: token in,
token out), so the text is their decoding with the policy's own tokenizer (``tokenizer.json``).
The last recorded call of the optimized agent holds the whole conversation, tool results included;
special tokens are kept in a transcript (they show the roles) and dropped from a demonstration's
answer. A transcript longer than its budget keeps its head and, mostly, its tail (the end of the
conversation and the answer), with the number of tokens cut in between.
"""

from __future__ import annotations

from pathlib import Path

from streamrl.errors import StreamRLError
from streamrl.optimizer.evaluation import AttemptInfo
from streamrl.schemas import LLMRequest

MAX_ERROR_CHARS = 1500


class Decoder:
    """Token ids -> text with a Hugging Face ``tokenizer.json``.

    Raises:
        StreamRLError: the directory has no loadable ``tokenizer.json``.
    """

    def __init__(self, tokenizer_dir: Path) -> None:
        path = Path(tokenizer_dir) / "tokenizer.json"
        try:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # a missing or unreadable file: say which
            raise StreamRLError(
                f"cannot load the policy's tokenizer {path} ({exc}); set optimize.tokenizer to the "
                "model directory (recorded calls are token ids)"
            ) from exc

    def decode(self, ids: list[int], *, skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def count(self, text: str) -> int:
        """Tokens of ``text``."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def clip(self, ids: list[int], budget: int) -> str:
        """The decoding of ``ids``, or of its first quarter and last three quarters of ``budget``
        tokens with ``[... N tokens cut ...]`` between."""
        if len(ids) <= budget:
            return self.decode(ids)
        head = budget // 4
        tail = budget - head
        cut = len(ids) - head - tail
        return f"{self.decode(ids[:head])}\n[... {cut} tokens cut ...]\n{self.decode(ids[-tail:])}"


def clip_error(error: str | None) -> str | None:
    """An error text cut to its last ``MAX_ERROR_CHARS`` characters (a traceback ends with the cause)."""
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return "[...]" + error[-MAX_ERROR_CHARS:]


def experiment(
    index: int, attempt: AttemptInfo, call: LLMRequest | None, decoder: Decoder, budget: int, payload: str
) -> str:
    """One rollout as a critique reads it: task, status, reward, error, and the conversation.

    Args:
        index: the rollout's number in the critique (from 1).
        attempt: the counted attempt.
        call: its last recorded call by the optimized agent (None: it made none, or it was not read).
        budget: tokens of conversation shown at most.
        payload: the task's payload (JSON text).
    """
    reward = "none" if attempt.reward is None else f"{attempt.reward:g}"
    lines = [
        f"### Rollout {index}: task {attempt.task_id}, status {attempt.status}, reward {reward}",
        f"Task: {payload}",
    ]
    error = clip_error(attempt.error)
    if error:
        lines.append(f"Error:\n{error}")
    if call is None:
        lines.append("Conversation: (no recorded call)")
    else:
        ids = list(call.prompt_token_ids) + list(call.response_token_ids)
        lines.append(f"Conversation (the last call, {len(ids)} tokens; the model's answer at the end):")
        lines.append(decoder.clip(ids, budget))
    return "\n".join(lines)


def answer(call: LLMRequest, decoder: Decoder) -> str:
    """The recorded answer of a call, decoded without special tokens."""
    return decoder.decode(list(call.response_token_ids), skip_special=True).strip()
