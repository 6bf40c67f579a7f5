"""Localisation: one catalog per language, keyed by the English source text.

Every user-facing string is an English *template* with named placeholders::

    tr(interaction.locale, "Your prompt is {length} characters; the model accepts at most {limit}.",
       length=812, limit=800)

The template is looked up in ``bot/locales/<language>.json`` (English source -> translation) and the
placeholders are filled in afterwards, so Discord markup (``<@{user}>``, ``<t:{ts}:R>``, ``<#{channel}>``),
code spans and URLs stay outside the translation. An unknown locale or a missing entry falls back to
the English template, so English output is exactly the source text.

- ``tr(locale, template, **params)``: translate now.
- ``trn(locale, n, singular, plural, **params)``: the same, choosing the form by ``n`` (``{n}`` is set).
- ``Msg.plural(n, singular, plural, **params)``: a ``Msg`` of the singular or the plural template, chosen
  by ``n`` (``{n}`` is set). Both forms are catalog keys, so every language keeps its own wording.
- ``Msg(template, **params)``: a *deferred* translation. It is a ``str`` (the English text), so it goes
  anywhere a string went before, and ``render(text, locale)`` turns it into any language later -- used
  when the reader's language is not known where the text is made (media errors, launch results, job
  errors stored for a public status message).
- ``N_(template)``: marks a constant for the catalog check without translating it (translate it where
  it is shown, with ``tr(locale, CONSTANT)``).

Placeholder values that are ``Msg`` are rendered in the same language as the template around them.
Log messages are never translated. Command descriptions, choice names and the context-menu name are
localised by ``CatalogTranslator`` when commands are synced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from importlib import resources
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)

SOURCE_LANGUAGE = "en"

LocaleLike = discord.Locale | str | None


def _load_catalogs() -> dict[str, dict[str, str]]:
    catalogs: dict[str, dict[str, str]] = {}
    folder = resources.files("bot").joinpath("locales")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            catalogs[entry.name.removesuffix(".json")] = {str(k): str(v) for k, v in data.items()}
    return catalogs


CATALOGS: dict[str, dict[str, str]] = _load_catalogs()


class CatalogError(ValueError):
    """A translation file that cannot be used; the message names the file."""


def read_catalog(path: Path) -> dict[str, str]:
    """One `<code>.json` catalog: a JSON object of English template -> translation."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogError(f"{path.name}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise CatalogError(f"{path.name}: must be a JSON object of strings")
    return {str(k): v for k, v in data.items()}


def known_locale(code: str) -> bool:
    """A Discord locale code ("fr", "pt-BR") or the language part of one ("pt")."""
    codes = {locale.value for locale in discord.Locale}
    return code in codes or any(c.split("-", 1)[0] == code for c in codes)


def add_catalogs(folder: Path) -> list[str]:
    """Load every `<code>.json` in `folder` (the LOCALES_DIR setting) on top of the bundled catalogs,
    so a language can be added without reinstalling the package. Returns the codes loaded; a file
    that cannot be used is logged and skipped (the bot still answers, in English)."""
    loaded: list[str] = []
    for path in sorted(folder.glob("*.json")):
        code = path.stem
        try:
            if not known_locale(code):
                raise CatalogError(f"{path.name}: {code!r} is not a Discord locale code (fr, pt-BR, ja, ...)")
            catalog = read_catalog(path)
        except CatalogError as exc:
            log.error("LOCALES_DIR: %s; skipped", exc)
            continue
        CATALOGS[code] = {**CATALOGS.get(code, {}), **catalog}
        loaded.append(code)
    if loaded:
        log.info("Loaded translations from %s: %s", folder, ", ".join(loaded))
    return loaded


def catalog_digest() -> str:
    """A hash of every catalog: part of the command fingerprint, so a new translation re-syncs."""
    blob = json.dumps(CATALOGS, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def language(locale: LocaleLike) -> str | None:
    """The catalog for a Discord locale ("de", "pt-BR", ...), or None for English and unknown ones."""
    if locale is None:
        return None
    code = locale.value if isinstance(locale, discord.Locale) else str(locale)
    if code in CATALOGS:
        return code
    base = code.split("-", 1)[0]
    return base if base in CATALOGS else None


def lookup(locale: LocaleLike, template: str) -> str:
    """The translation of a template (unformatted); the template itself when there is none."""
    lang = language(locale)
    if lang is None:
        return template
    return CATALOGS[lang].get(template) or template


def _format(template: str, translated: str, params: dict[str, Any], locale: LocaleLike) -> str:
    if not params:
        return translated  # no placeholders to fill (and free text with braces stays as it is)
    values = {k: render(v, locale) if isinstance(v, Msg) else v for k, v in params.items()}
    try:
        return translated.format(**values)
    except (KeyError, IndexError, ValueError):
        if translated is template:
            raise
        log.error("Broken translation for %r in %s; using English", template, locale)
        return template.format(**values)


def tr(locale: LocaleLike, template: str, /, **params: Any) -> str:
    """Translate a template into the reader's language and fill in its placeholders."""
    return _format(template, lookup(locale, template), params, locale)


def trn(locale: LocaleLike, n: int, singular: str, plural: str, /, **params: Any) -> str:
    """`tr` with the singular or the plural template, chosen by `n` (available as ``{n}``)."""
    return tr(locale, plural_form(n, singular, plural), n=n, **params)


def plural_form(n: int, singular: str, plural: str) -> str:
    """The template for `n` things: English (the source language) has one singular, 1."""
    return singular if n == 1 else plural


def N_(template: str) -> str:
    """Mark a constant template for the catalog; translate it where it is shown."""
    return template


class Msg(str):
    """A message whose language is chosen later: a `str` holding the English text, which remembers its
    template and placeholders so `render` can produce any other language."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, /, **params: Any) -> Msg:
        self = super().__new__(cls, _format(template, template, params, None))
        self.template = template
        self.params = params
        return self

    @classmethod
    def plural(cls, n: int, singular: str, plural: str, /, **params: Any) -> Msg:
        """The singular or the plural template, chosen by `n` (available as ``{n}``)."""
        return cls(plural_form(n, singular, plural), n=n, **params)

    def render(self, locale: LocaleLike) -> str:
        if language(locale) is None:
            return str(self)
        return _format(self.template, lookup(locale, self.template), self.params, locale)


def render(text: str, locale: LocaleLike) -> str:
    """A `Msg` in the reader's language; any other string as it is."""
    return text.render(locale) if isinstance(text, Msg) else str(text)


def placeholders(template: str) -> set[tuple[str, str]]:
    """The (name, format spec) of every placeholder: a translation must keep exactly these."""
    return {(name, spec or "") for _, name, spec, _ in string.Formatter().parse(template) if name is not None}


class CatalogTranslator(app_commands.Translator):
    """Localises command and option descriptions, choice names and context-menu names from the catalogs.

    Slash-command, group and option *names* stay English, so the README's commands work for everyone.
    """

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        where = context.location
        names = (
            app_commands.TranslationContextLocation.command_name,
            app_commands.TranslationContextLocation.group_name,
            app_commands.TranslationContextLocation.parameter_name,
        )
        if where in names and not isinstance(context.data, app_commands.ContextMenu):
            return None
        lang = language(locale)
        if lang is None:
            return None
        return CATALOGS[lang].get(string.message)
