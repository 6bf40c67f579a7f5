"""The catalogs: every translatable template in the source has a complete German translation with the
same placeholders and markup, nothing stale is left in the catalog, and replies are not raw English."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import discord
import pytest

from bot import i18n
from bot.i18n import Msg, render, tr, trn

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("bot", "cogs", "storage")

# Callables whose argument(s) at these positions are English templates for the catalog.
TEMPLATE_ARGS: dict[str, tuple[int, ...]] = {
    "tr": (1,),
    "trn": (2, 3),
    "plural": (1, 2),  # Msg.plural(n, singular, plural)
    "Msg": (0,),
    "N_": (0,),
    "locale_str": (0,),
    "_l": (0,),
    "MediaError": (0,),
    "DownloadError": (0,),
    "DownloadTooLarge": (0,),
}

# Calls that put text in front of users, and where their text goes.
SEND_METHODS = {"send_message", "edit_original_response", "send", "edit"}

# Literal text that may be sent as it is: not words (markup, emoji + placeholders only).
ALLOWED_RAW = {
    "✅ {}",
}


@dataclass(frozen=True)
class Found:
    template: str
    where: str


def _literals(node: ast.expr) -> list[str] | None:
    """The literal strings an argument can be: a constant, or either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        body, orelse = _literals(node.body), _literals(node.orelse)
        if body is not None and orelse is not None:
            return body + orelse
    return None


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _is_msg_plural(func: ast.expr) -> bool:
    """`Msg.plural(...)`: only that `plural` holds templates."""
    return isinstance(func, ast.Attribute) and _name(func.value) == "Msg"


def _files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def source_templates() -> list[Found]:
    found: list[Found] = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _name(node.func)
            if name not in TEMPLATE_ARGS or name is None:
                continue
            if name == "tr" and not isinstance(node.func, ast.Name):
                continue
            if name == "plural" and not _is_msg_plural(node.func):
                continue
            for index in TEMPLATE_ARGS[name]:
                if index < len(node.args):
                    values = _literals(node.args[index])
                    for value in values or []:
                        found.append(Found(value, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


TEMPLATES = source_templates()
SOURCE_KEYS = {f.template for f in TEMPLATES}
GERMAN = i18n.CATALOGS["de"]

# Markup that must survive translation unchanged: Discord mentions/timestamps/links with placeholders,
# code spans, URLs and command names.
_MARKUP = re.compile(r"<[@#&t/][^<>\s]*>|<\{[^}]*\}>|`[^`]*`|https?://\S+|/animate[-\w]*")


def test_the_scan_finds_the_templates() -> None:
    assert len(SOURCE_KEYS) > 300, len(SOURCE_KEYS)
    assert "You can't ban yourself." in SOURCE_KEYS
    assert "Animate this image" in SOURCE_KEYS


@pytest.mark.parametrize("found", TEMPLATES, ids=lambda f: f.where)
def test_every_template_has_a_german_translation(found: Found) -> None:
    assert found.template in GERMAN, f"{found.where}: no German for {found.template!r}"


def test_no_stale_catalog_entries() -> None:
    stale = sorted(set(GERMAN) - SOURCE_KEYS)
    assert stale == [], f"entries no source uses any more: {stale}"


@pytest.mark.parametrize("english", sorted(GERMAN))
def test_translation_keeps_placeholders_and_markup(english: str) -> None:
    german = GERMAN[english]
    assert german.strip(), english
    assert i18n.placeholders(german) == i18n.placeholders(english), (english, german)
    for token in _MARKUP.findall(english):
        assert token in german, f"{token!r} lost in the German of {english!r}: {german!r}"
    # Formatting must work with the same values as the English.
    values = {name: 1 for name, _ in i18n.placeholders(english)}
    assert tr("de", english, **values)


# German that is rightly the same as the English: names, loanwords and markup-only templates.
SAME_IN_GERMAN = {
    "Credits",
    "Details",
    "Job #{id}",
    "Job #{id} · {backend}",
    "Jobs ({total})",
    "Limits",
    "Prompt",
    "Seed",
    "Status",
    "{limits}{cooldown}{budget}",
    "{n} credit",
}


def test_translations_are_not_just_copies() -> None:
    same = sorted(k for k, v in GERMAN.items() if k == v and k not in SAME_IN_GERMAN)
    assert same == [], f"untranslated: {same}"


def test_discord_limits_for_command_strings() -> None:
    """Localised descriptions and choice names follow Discord's limits (1-100 characters; the
    context-menu name 1-32)."""
    assert len(GERMAN["Animate this image"]) <= 32
    strings = _command_strings()
    assert len(strings) > 40, strings
    for english in strings:
        assert 1 <= len(GERMAN[english]) <= 100, (english, GERMAN[english])


def _command_strings() -> set[str]:
    out: set[str] = set()
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node.func) in ("locale_str", "_l"):
                values = _literals(node.args[0]) if node.args else None
                out.update(values or [])
    return out


def _raw_english(node: ast.expr) -> str | None:
    """The text of a literal or f-string argument that contains words, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values
        )
    else:
        return None
    return text if re.search(r"[A-Za-z]{2,}", text) or text in ALLOWED_RAW else None


def test_replies_are_not_raw_english() -> None:
    """Text handed to Discord goes through the catalog: no English literal or f-string is sent as is."""
    offenders: list[str] = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _name(node.func) not in SEND_METHODS:
                continue
            args = list(node.args[:1]) + [k.value for k in node.keywords if k.arg in ("content", "text")]
            for arg in args:
                text = _raw_english(arg)
                if text is not None and text not in ALLOWED_RAW:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    assert offenders == []


def test_embed_titles_and_field_names_are_translated() -> None:
    """Best effort for embeds: titles, field names and footers are not English literals."""
    offenders: list[str] = []
    for path in _files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _name(node.func) not in ("Embed", "add_field", "set_footer"):
                continue
            for keyword in node.keywords:
                if keyword.arg in ("title", "name", "text", "description", "value", "label"):
                    text = _raw_english(keyword.value)
                    if text is not None and not re.fullmatch(r"[\d\sPp:·{}]*", text):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {keyword.arg}={text!r}")
    # Prices ("480P: {} · 1080P: {}") are resolutions and numbers, the same in every language.
    offenders = [o for o in offenders if "480P: {} · 1080P: {}" not in o]
    assert offenders == []


# ----------------------------------------------------------------------------------------------- runtime


def test_english_is_the_source_and_the_fallback() -> None:
    template = "Your prompt is {length} characters; the model accepts at most {limit}."
    english = "Your prompt is 900 characters; the model accepts at most 800."
    assert tr(None, template, length=900, limit=800) == english
    assert tr(discord.Locale.american_english, template, length=900, limit=800) == english
    assert tr(discord.Locale.japanese, template, length=900, limit=800) == english  # no catalog yet
    assert tr("xx-YY", template, length=900, limit=800) == english
    assert tr("de", "no such template {x}", x=1) == "no such template 1"
    german = tr(discord.Locale.german, template, length=900, limit=800)
    assert german != english and "900" in german and "800" in german


def test_msg_is_english_and_renders_later() -> None:
    inner = Msg("today")
    msg = Msg(" {n} credits left {when}.", n=3, when=inner)
    assert msg == " 3 credits left today." and isinstance(msg, str)
    assert render(msg, "de") == " Dir bleiben heute noch 3 Credits."
    assert render(msg, "en-GB") == msg
    assert render("plain {text}", "de") == "plain {text}"  # free text is never formatted


def test_plural_forms() -> None:
    assert trn(None, 1, "{n} credit", "{n} credits") == "1 credit"
    assert trn(None, 2, "{n} credit", "{n} credits") == "2 credits"
    assert trn("de", 2, "{n} credit", "{n} credits") == GERMAN["{n} credits"].format(n=2)


def test_msg_plural_chooses_the_form_and_renders_later() -> None:
    one = Msg.plural(1, " {n} credit left {when}.", " {n} credits left {when}.", when=Msg("today"))
    many = Msg.plural(3, " {n} credit left {when}.", " {n} credits left {when}.", when=Msg("today"))
    assert (one, many) == (" 1 credit left today.", " 3 credits left today.")
    assert many.template == " {n} credits left {when}." and many.params["n"] == 3
    # German keeps its own form for each: both templates are catalog keys.
    assert render(one, "de") == GERMAN[" {n} credit left {when}."].format(n=1, when=tr("de", "today"))
    assert render(many, "de") == " Dir bleiben heute noch 3 Credits."
    assert Msg.plural(0, "{n} credit", "{n} credits") == "0 credits"


def test_the_scan_reads_both_forms_of_msg_plural() -> None:
    code = 'Msg.plural(n, "one {n} thing", "{n} things", x=1)\nother.plural(n, "not a template", "no")'
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)]
    assert [_is_msg_plural(c.func) for c in calls] == [True, False]
    assert {"Members get {n} credit per {period}, resetting at {hour:02d}:00 UTC."} <= SOURCE_KEYS
    assert {"Members get {n} credits per {period}, resetting at {hour:02d}:00 UTC."} <= SOURCE_KEYS


def test_a_broken_translation_falls_back_to_english(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GERMAN, "{n} credits", "{m} Credits")
    assert tr("de", "{n} credits", n=2) == "2 credits"


async def test_translator_localises_descriptions_not_names() -> None:
    from discord import app_commands

    translator = i18n.CatalogTranslator()
    german = discord.Locale.german
    desc = app_commands.locale_str("See how many /animate credits you have left")
    ctx = app_commands.TranslationContext(app_commands.TranslationContextLocation.command_description, None)
    assert await translator.translate(desc, german, ctx) == GERMAN[desc.message]
    assert await translator.translate(desc, discord.Locale.british_english, ctx) is None
    name_ctx = app_commands.TranslationContext(app_commands.TranslationContextLocation.command_name, None)
    assert await translator.translate(app_commands.locale_str("day"), german, name_ctx) is None
