"""Discord's limits and form errors: message content, embeds, components, uploads, command payloads."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from ._common import (
    DISCORD_LOCALES,
    INTERACTIVE_COMPONENT_TYPES,
    IS_COMPONENTS_V2,
    SELECT_TYPES,
    DiscordError,
    _FormErrors,
    _iter_components,
    _Upload,
)
from ._state import FakeState


class ValidationMixin(FakeState):
    """Validates what the bot sends the way Discord does (400/50035 with nested errors)."""

    # ---------------------------------------------------------------------------------------------------
    # Messages
    # ---------------------------------------------------------------------------------------------------

    def _validate_embed(self, embed: Any, errors: _FormErrors, path: tuple[Any, ...]) -> int:
        if not isinstance(embed, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            return 0
        total = 0
        for key, limit in (("title", 256), ("description", 4096)):
            value = embed.get(key)
            if value is not None:
                errors.max_len((*path, key), value, limit)
                total += len(str(value))
        for key in ("url",):
            url = embed.get(key)
            if url is not None and not re.match(r"^(https?|attachment)://", str(url)):
                errors.add((*path, key), "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        for key in ("image", "thumbnail"):
            sub = embed.get(key)
            url = sub.get("url") if isinstance(sub, dict) else None
            if url is not None and not re.match(r"^(https?|attachment)://", str(url)):
                errors.add((*path, key, "url"), "URL_TYPE_INVALID_URL", "Not a well formed URL.")
        fields = embed.get("fields") or []
        errors.max_len((*path, "fields"), fields, 25)
        for i, f in enumerate(fields):
            for key, limit in (("name", 256), ("value", 1024)):
                value = f.get(key)
                if value is None or value == "":
                    errors.add((*path, "fields", i, key), "BASE_TYPE_REQUIRED", "This field is required")
                else:
                    errors.max_len((*path, "fields", i, key), value, limit)
                    total += len(str(value))
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text") is not None:
            errors.max_len((*path, "footer", "text"), footer["text"], 2048)
            total += len(str(footer["text"]))
        author = embed.get("author")
        if isinstance(author, dict) and author.get("name") is not None:
            errors.max_len((*path, "author", "name"), author["name"], 256)
            total += len(str(author["name"]))
        color = embed.get("color")
        if color is not None and not (isinstance(color, int) and 0 <= color <= 0xFFFFFF):
            errors.add((*path, "color"), "NUMBER_TYPE_MAX", "int value should be <= 16777215 and >= 0.")
        return total

    def _validate_interactive(
        self, comp: dict[str, Any], errors: _FormErrors, path: tuple[Any, ...], seen: set[str]
    ) -> None:
        ctype = comp.get("type")
        custom_id = comp.get("custom_id")
        if ctype == 2:
            style = comp.get("style")
            if style not in (1, 2, 3, 4, 5, 6):
                errors.add((*path, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5, 6}.")
            if style == 6:
                # Premium buttons: Discord draws the SKU's name and price; nothing else may be set.
                if not comp.get("sku_id"):
                    errors.add((*path, "sku_id"), "BASE_TYPE_REQUIRED", "This field is required")
                for name in ("label", "emoji", "custom_id", "url"):
                    if comp.get(name) is not None:
                        errors.add(
                            (*path, name),
                            "BUTTON_COMPONENT_PREMIUM_INVALID",
                            "Premium buttons cannot have " + name,
                        )
            elif comp.get("sku_id") is not None:
                errors.add(
                    (*path, "sku_id"), "BUTTON_COMPONENT_SKU_ID_INVALID", "Only premium buttons take a sku_id"
                )
            if style == 5:
                url = comp.get("url")
                if not url:
                    errors.add((*path, "url"), "BASE_TYPE_REQUIRED", "This field is required")
                elif not re.match(r"^(https?|discord)://[^\s]+$", str(url)):
                    errors.add(
                        (*path, "url"),
                        "URL_TYPE_INVALID_SCHEME",
                        "Scheme must be one of ('http', 'https', 'discord').",
                    )
                else:
                    errors.max_len((*path, "url"), url, 512)
                if custom_id is not None:
                    errors.add(
                        (*path, "custom_id"),
                        "BUTTON_COMPONENT_LINK_CUSTOM_ID",
                        "Link buttons cannot have a custom id",
                    )
            elif style != 6 and not custom_id:
                errors.add((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            if style != 6 and not comp.get("label") and not comp.get("emoji"):
                errors.add(path, "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED", "A label or emoji is required")
            errors.max_len((*path, "label"), comp.get("label"), 80)
        elif ctype in SELECT_TYPES:
            if not custom_id:
                errors.add((*path, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            errors.max_len((*path, "placeholder"), comp.get("placeholder"), 150)
            if ctype == 3:
                opts = comp.get("options") or []
                if not 1 <= len(opts) <= 25:
                    errors.add(
                        (*path, "options"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length."
                    )
                for i, o in enumerate(opts):
                    errors.max_len((*path, "options", i, "label"), o.get("label"), 100)
                    errors.max_len((*path, "options", i, "value"), o.get("value"), 100)
            min_v, max_v = comp.get("min_values", 1), comp.get("max_values", 1)
            if not (0 <= min_v <= 25 and 1 <= max_v <= 25 and min_v <= max_v):
                errors.add((*path, "max_values"), "BASE_TYPE_BAD_INT", "Invalid min_values / max_values.")
        if custom_id is not None:
            errors.max_len((*path, "custom_id"), custom_id, 100)
            if custom_id in seen:
                errors.add(
                    (*path, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(custom_id)

    def _validate_components(
        self, components: Any, flags: int, errors: _FormErrors, path: tuple[Any, ...]
    ) -> None:
        if not isinstance(components, list):
            errors.add(path, "BASE_TYPE_LIST", "Must be a list.")
            return
        seen: set[str] = set()
        if flags & IS_COMPONENTS_V2:
            comps = list(_iter_components(components))
            if len(comps) > 40:
                errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
            for i, comp in enumerate(comps):
                if comp.get("type") in INTERACTIVE_COMPONENT_TYPES:
                    self._validate_interactive(comp, errors, (*path, i), seen)
            return
        errors.max_len(path, components, 5)
        for i, row in enumerate(components):
            if not isinstance(row, dict) or row.get("type") != 1:
                errors.add(
                    (*path, i, "type"),
                    "UNION_TYPE_CHOICES",
                    'Value of field "type" must be one of (1,) without the IS_COMPONENTS_V2 flag.',
                )
                continue
            kids = row.get("components") or []
            if not 1 <= len(kids) <= 5:
                errors.add(
                    (*path, i, "components"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."
                )
            if any(k.get("type") in SELECT_TYPES for k in kids) and len(kids) > 1:
                errors.add(
                    (*path, i, "components"),
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
            for j, kid in enumerate(kids):
                self._validate_interactive(kid, errors, (*path, i, "components", j), seen)

    def _validate_message_payload(
        self, payload: dict[str, Any], uploads: Sequence[_Upload], prefix: tuple[Any, ...] = ()
    ) -> None:
        errors = _FormErrors()
        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            errors.add((*prefix, "content"), "STRING_TYPE_CONVERT", "Could not interpret value as string.")
        else:
            errors.max_len((*prefix, "content"), content, 2000)
        embeds = payload.get("embeds")
        if embeds:
            errors.max_len((*prefix, "embeds"), embeds, 10)
            total = sum(self._validate_embed(e, errors, (*prefix, "embeds", i)) for i, e in enumerate(embeds))
            if total > 6000:
                errors.add(
                    (*prefix, "embeds"), "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
                )
        flags = int(payload.get("flags") or 0)
        if payload.get("components"):
            self._validate_components(payload["components"], flags, errors, (*prefix, "components"))
        if flags & IS_COMPONENTS_V2 and (content or embeds):
            errors.add(
                (*prefix, "content"),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
            )
        am = payload.get("allowed_mentions")
        if isinstance(am, dict):
            parse = am.get("parse") or []
            for kind in ("users", "roles"):
                if kind in parse and am.get(kind):
                    errors.add(
                        (*prefix, "allowed_mentions"),
                        "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                        f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                    )
        if len(uploads) > 10:
            errors.add((*prefix, "files"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        errors.raise_if_any()

    def _check_upload_sizes(self, uploads: Sequence[_Upload]) -> None:
        for up in uploads:
            if len(up.data) > self.upload_limit:
                raise DiscordError(413, 40005, "Request entity too large")

    @staticmethod
    def _is_empty(msg: dict[str, Any]) -> bool:
        return not (
            msg.get("content")
            or msg.get("embeds")
            or msg.get("components")
            or msg.get("attachments")
            or msg.get("sticker_items")
            or msg.get("poll")
        )

    # ---------------------------------------------------------------------------------------------------
    # Command payloads
    # ---------------------------------------------------------------------------------------------------

    def _validate_command(self, cmd: Any, errors: _FormErrors, path: tuple[Any, ...]) -> None:
        if not isinstance(cmd, dict):
            errors.add(path, "MODEL_TYPE_CONVERT", "Only dictionaries may be used in a ModelType")
            return
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            errors.add((*path, "name"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        elif ctype == 1 and (not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower()):
            errors.add((*path, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
        self._validate_localizations(cmd, errors, path, slash=ctype == 1)
        # Where a command may be installed (0 server, 1 user) and run (0 server, 1 bot DM, 2 private
        # channel): null or a non-empty list of distinct known values, as Discord checks them.
        for key, known in (("integration_types", (0, 1)), ("contexts", (0, 1, 2))):
            values = cmd.get(key)
            if values is None:
                continue
            if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
                errors.add(
                    (*path, key), "BASE_TYPE_BAD_LENGTH", "Must be a non-empty list of distinct values."
                )
                continue
            for i, value in enumerate(values):
                if type(value) is not int or value not in known:
                    errors.add(
                        (*path, key, i), "ENUM_TYPE_COERCE", f'Value "{value}" is not a valid enum value.'
                    )
        if ctype == 1:
            desc = cmd.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                errors.add(
                    (*path, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            self._validate_options(cmd.get("options") or [], errors, (*path, "options"))

    def _validate_localizations(
        self,
        obj: dict[str, Any],
        errors: _FormErrors,
        path: tuple[Any, ...],
        *,
        slash: bool,
        max_name: int = 32,
    ) -> None:
        """`name_localizations` / `description_localizations`: known locales, and the same rules as the
        field itself (names of slash commands and options: lower-case, no spaces; 1-32 / 1-100 chars)."""
        for key, limit in (("name_localizations", max_name), ("description_localizations", 100)):
            values = obj.get(key)
            if values is None:
                continue
            if not isinstance(values, dict):
                errors.add((*path, key), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            for locale, text in values.items():
                if locale not in DISCORD_LOCALES:
                    errors.add(
                        (*path, key, locale), "BASE_TYPE_CHOICES", f"Value must be one of {DISCORD_LOCALES}."
                    )
                elif not isinstance(text, str) or not 1 <= len(text) <= limit:
                    errors.add(
                        (*path, key, locale),
                        "BASE_TYPE_BAD_LENGTH",
                        f"Must be between 1 and {limit} in length.",
                    )
                elif (
                    key == "name_localizations" and slash and not re.fullmatch(r"[-_\w]{1,32}", text.lower())
                ):
                    errors.add(
                        (*path, key, locale), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                    )

    def _validate_options(
        self, options: list[dict[str, Any]], errors: _FormErrors, path: tuple[Any, ...]
    ) -> None:
        errors.max_len(path, options, 25)
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            name = opt.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[-_\w]{1,32}", name) or name != name.lower():
                errors.add((*path, i, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
            if name in names:
                errors.add(
                    (*path, i, "name"),
                    "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                    "Option name already exists",
                )
            names.add(str(name))
            desc = opt.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                errors.add(
                    (*path, i, "description"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            self._validate_localizations(opt, errors, (*path, i), slash=True)
            if opt.get("type") in (1, 2):
                self._validate_options(opt.get("options") or [], errors, (*path, i, "options"))
                continue
            if opt.get("required"):
                if seen_optional:
                    errors.add(
                        (*path, i, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                seen_optional = True
            choices = opt.get("choices") or []
            errors.max_len((*path, i, "choices"), choices, 25)
            for j, choice in enumerate(choices):
                if isinstance(choice, dict):
                    self._validate_localizations(
                        choice, errors, (*path, i, "choices", j), slash=False, max_name=100
                    )
            if choices and opt.get("autocomplete"):
                errors.add(
                    (*path, i, "autocomplete"),
                    "AUTOCOMPLETE_AND_CHOICES",
                    "Cannot use both autocomplete and choices",
                )

    def _normalize_command(
        self, cmd: dict[str, Any], guild_id: str | None, existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        ctype = cmd.get("type", 1)
        prior = next((c for c in existing if c["name"] == cmd["name"] and c.get("type", 1) == ctype), None)
        out = copy.deepcopy(cmd)
        out["id"] = prior["id"] if prior else str(self._snowflake())
        out["application_id"] = str(self.application_id)
        out["version"] = str(self._snowflake())
        out["type"] = ctype
        out.setdefault("description", "")
        out.setdefault("default_member_permissions", None)
        out.setdefault("nsfw", False)
        if guild_id is not None:
            out["guild_id"] = str(guild_id)
        else:
            out.setdefault("contexts", None)
            out.setdefault("integration_types", [0])
        return out
