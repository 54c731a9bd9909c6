"""Untrusted text (histories, item descriptions, brand kits) on its way into a prompt or a banner.

Catalog text comes from users' files and third parties, so it is data, never instructions. Before it
reaches a prompt it is neutralised: look-alike and invisible characters cannot hide a word, anything a
chat template reads as structure (special tokens, role markers, our own <data> fence) is gone together
with whatever follows it, a sentence that addresses the model ("ignore previous instructions", "in
every ad say ...", "reveal your system prompt") is cut with the rest of the text, links, markup and
encoded blobs are removed and personal identifiers are redacted (`pii`). What is left is
fenced inside a delimited block that the system prompt tells the model not to obey. Imports run the
same neutralisation once, so the store holds the cleaned text; `findings` names what was found, which
the output checks and the brand kit use to reject text instead of cleaning it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

import pii

DATA_OPEN, DATA_CLOSE = "<data>", "</data>"
CUT = "\x1e"  # where a chat-template token stood; control characters from the input are gone by then
# Letters of other scripts that look like Latin ones: mapped for detection only ("іgnоre" is "ignore").
LOOKALIKES = str.maketrans(
    "аеіјорсухѕԁɡһӏАВЕНІЈКМОРСТХУΑΒΕΗΙΚΜΝΟΡΤΧΥΖαεικνορτυχ",
    "aeijopcyxsdghlABEHIJKMOPCTXYABEHIKMNOPTXYZaeikvoptux")
# Chat-template tokens of the common model families, and our own fence: the text after one is an attack.
TEMPLATE = re.compile(
    r"<\|[^<>]{0,40}\|>|</?s>|</?(?:bos|eos|pad|unk)>|<(?:start|end)_of_turn>|<<\s*/?\s*SYS\s*>>"
    r"|\[/?(?:INST|SYS|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\]"
    r"|<\s*/?\s*(?:data|system|user|assistant|human)\s*>", re.IGNORECASE)
SCRIPT = re.compile(r"<\s*(script|style)\b.*?(?:<\s*/\s*\1\s*>|$)", re.IGNORECASE | re.DOTALL)
TAG = re.compile(r"<[^<>]{0,300}>")
# A speaker label as chat logs and instruction-tuning formats write them: "### System:", "assistant:".
ROLE = re.compile(
    r"(?:^|(?<=[\s#*>|\-\[(\"'`]))(?:system|assistant|user|human|developer|ai|bot)(?:\s+(?:prompt|message))?\s*:"
    r"|#{1,6}\s*(?:system|assistant|user|human|instruction|response|input|output)s?\b"
    r"|[\"']role[\"']\s*:\s*[\"'](?:system|assistant|user|developer)", re.IGNORECASE)  # JSON chat messages
# Phrases that speak to a language model rather than describe a product.
INSTRUCTION = re.compile("|".join([
    r"\b(?:ignore|disregard|forget|override|bypass|skip)\b[^.!?\n|]{0,40}?"
    r"\b(?:instructions?|prompts?|rules|guidelines|directions|directives|context|above|previous|prior|earlier)\b",
    r"\b(?:previous|prior|above|earlier|preceding|original)\s+(?:instructions?|prompts?|directions|directives)\b",
    r"\b(?:new|updated|real|true|actual|hidden|secret|additional)\s+"
    r"(?:instructions?|rules|task|role|policy|policies|directives?|orders)\b",
    r"\bsystem\s*(?:prompt|message|override|instructions?|note|update|alert|notice)\b",
    r"\b(?:developer|admin|god|jailbreak|dan|debug)\s+mode\b|\bjailbr[eo]ak",
    r"\byou\s+(?:are|were|will\s+be)\s+now\b",
    r"\byou\s+are\s+(?:an?\s+)?(?:ai|assistant|chatbot|language model|llm|bot)\b",
    r"\b(?:act|behave|respond)\s+as\s+(?:if|an?|the)\b|\bpretend\s+(?:to\s+be|you|that)\b|\bfrom\s+now\s+on\b",
    r"\b(?:reveal|repeat|print|show|output|display|leak|dump|recite|share|tell\s+me)\b[^.!?\n|]{0,30}?"
    r"\b(?:prompt|instructions|(?:text|words|everything)\s+above|rules|initial\s+message)\b",
    r"\byour\s+(?:instructions|(?:system\s+)?prompt|guidelines|programming|training)\b",
    r"\b(?:in|into|to|at\s+the\s+end\s+of)\s+(?:the|your|every|each|all|this|any)\s+(?:ads?|adverts?|advertisements?|"
    r"answers?|repl(?:y|ies)|responses?|outputs?|copy|headlines?|banners?|creatives?|summar(?:y|ies)|completions?)\b",
    r"\b(?:ads?|answers?|repl(?:y|ies)|responses?|outputs?|copy|headlines?|summary|banners?|creatives?)\s+"
    r"(?:must|should|shall|has\s+to|have\s+to|needs?\s+to)\b",
    r"\b(?:tell|ask|urge|invite|remind|instruct|email|e-mail|text|call|contact|message)\s+(?:the\s+|all\s+|every\s+)?"
    r"(?:viewers?|customers?|users?|readers?|audience|recipients?|subscribers?)\b",
    r"\b(?:respond|reply|answer)\s+(?:only\s+)?(?:with|in|using)\b",
    r"\b(?:write|say|print|output|type|add|insert|include|append|prepend|mention)\s+(?:only\s+|exactly\s+)?"
    r"(?:the\s+)?(?:words?|phrases?|text|string|code|token|sentence|following)\b",
    r"\b(?:do\s+not|don't|never)\s+(?:follow|obey|listen\s+to)\b",
    r"\bprompt\s+injection\b|\b(?:as\s+an?\s+)?(?:ai|language\s+model|llm|chatbot)\s*[,:]",
]), re.IGNORECASE)
LINK = re.compile(
    r"!?\[[^\]]{0,200}\]\([^)]{0,500}\)|\b(?:https?|ftp|javascript|data|mailto):\S*|\bwww\.\S+"
    r"|(?<![\w@.-])(?:[a-z0-9-]+\.)+(?:com|net|org|io|xyz|ru|info|biz|co|app|ly|me|gg|site|online|click|link|top|"
    r"example|test)(?:/\S*)?(?![\w.-])", re.IGNORECASE)
ENCODED = re.compile(r"(?<![\w+/=])(?=[A-Za-z0-9+/]*\d)(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])"
                     r"[A-Za-z0-9+/]{24,}={0,2}(?![\w+/=])")
SENTENCE_END = re.compile(r"[.!?\n|;:]")


@dataclass(frozen=True)
class Neutralised:
    """Text fit to be data, and what was taken out of it (one entry per finding, e.g. "instructions", "email")."""

    text: str
    findings: tuple[str, ...]

    @property
    def personal(self) -> int:
        """How many personal identifiers were redacted."""
        return sum(kind in pii.KINDS for kind in self.findings)

    @property
    def attack(self) -> bool:
        """Whether anything besides personal data was removed: markup, links or instructions."""
        return any(kind not in pii.KINDS for kind in self.findings)


def _characters(text: str) -> str:
    """NFKC (full-width letters become ASCII), entities decoded, invisible characters deleted, controls spaced."""
    value = unicodedata.normalize("NFKC", html.unescape(unicodedata.normalize("NFKC", text)))
    value = "".join(ch for ch in value if unicodedata.category(ch) != "Cf")
    return "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in value)


def _structure(text: str, found: list[str]) -> str:
    """Template tokens become cut marks; scripts, tags and stray angle brackets go."""
    text, tokens = TEMPLATE.subn(CUT, text)
    found += ["chat-template markup"] * bool(tokens)
    text, tags = SCRIPT.subn("", text)
    text, more = TAG.subn("", text)
    found += ["markup"] * bool(tags + more)
    return text.replace("<", "").replace(">", "")


def _cut_point(text: str, found: list[str]) -> int:
    """Where the text stops being data: at a template token, a role marker, or the sentence of an instruction."""
    skeleton = text.translate(LOOKALIKES)
    cuts = [text.index(CUT)] if CUT in text else []
    if role := ROLE.search(skeleton):
        found.append("role marker")
        cuts.append(role.start())
    if order := INSTRUCTION.search(skeleton):
        found.append("instructions")
        ends = [m.end() for m in SENTENCE_END.finditer(skeleton, 0, order.start())]
        cuts.append(ends[-1] if ends else 0)
    return min(cuts, default=len(text))


def neutralise(text: object) -> Neutralised:
    """Untrusted text as data: the steps in the module docstring, in order; line breaks are kept."""
    found: list[str] = []
    value = _structure(_characters(str(text or "")), found)
    value = value[: _cut_point(value, found)].replace(CUT, " ")
    value, links = LINK.subn(" ", value)
    value, blobs = ENCODED.subn(" ", value)
    found += ["link"] * links + ["encoded text"] * blobs
    value, personal = pii.redact(value)
    value = re.sub(r"[ \t]+", " ", value).strip()
    if found:  # what stood before a cut may end in a dangling separator or the full stop before the attack
        value = value.rstrip(" \n-–—:;,|*#.!?")
    return Neutralised(value, tuple(found + personal))


def findings(text: object) -> list[str]:
    """What neutralising the text would remove, each kind once; empty for plain data."""
    return list(dict.fromkeys(neutralise(text).findings))


def clean(text: object, limit: int = 200) -> str:
    """One line of neutralised printable text, cut to `limit` characters."""
    value = re.sub(r"\s+", " ", neutralise(text).text).strip()
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def fenced(lines: list[str]) -> str:
    """Cleaned lines inside the data fence, one per line."""
    body = "\n".join(f"- {clean(line)}" for line in lines)
    return f"{DATA_OPEN}\n{body}\n{DATA_CLOSE}"
