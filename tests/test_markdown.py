"""The pull-request comment: structure (parsed with markdown-it), size limit, masking, escaping."""

import json
import re

import pytest
from markdown_it import MarkdownIt

from conftest import EXAMPLE, ROOT, plan_and_apply, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.loader import loads_desired
from reconciler.markdown import GITHUB_COMMENT_LIMIT, MARKER, comment_length, esc, pseudonym, render_markdown
from reconciler.serialize import plan_checksum, plan_to_dict

REBUILD = ROOT / "desired-state" / "rebuild.toml"


def saved(plan, scripts=None):
    """What a saved plan looks like: plan_to_dict plus the keys ``plan -out`` adds."""
    data = plan_to_dict(plan, scripts)
    data |= {"checksum": plan_checksum(plan), "unsafe": list(plan.unsafe), "approvals_needed": list(plan.approvals_needed), "fingerprints": {"x": "y"}}
    return data


def tokens(text):
    return MarkdownIt("commonmark").enable("table").parse(text)


def html_blocks(toks, prefix):
    return [t for t in toks if t.type == "html_block" and t.content.lstrip().startswith(prefix)]


def heading_index(toks, title):
    for index, token in enumerate(toks):
        if token.type == "inline" and index > 0 and toks[index - 1].type == "heading_open" and token.content.startswith(title):
            return index
    raise AssertionError(f"no heading {title!r}")


def test_default_plan_is_structured_for_review(target):
    plan = plan_for(EXAMPLE, target)
    text = render_markdown(saved(plan))
    toks = tokens(text)
    # The marker comes first, on its own line, so a CI job can find its comment.
    assert text.splitlines()[0] == MARKER
    assert toks[0].type == "html_block" and toks[0].content.strip() == MARKER
    summary = heading_index(toks, "Summary")
    steps_at = heading_index(toks, "Steps, in order")
    guid_at = heading_index(toks, "msExchMailboxGuid")
    notices_at = heading_index(toks, "Notices")
    assert summary < steps_at < guid_at < notices_at
    # The counts table sits in the summary, before the steps.
    table = next(i for i, t in enumerate(toks) if t.type == "table_open")
    assert summary < table < steps_at
    cells = [t.content for t in toks[table:] if t.type == "inline"][:14]
    assert cells[:7] == ["create", "update", "delete", "run", "check", "costly", "irreversible"]
    counts = plan.counts()
    assert cells[7:] == [str(counts[k]) for k in ("create", "update", "delete", "run", "check", "costly", "irreversible")]
    # One collapsible section per step, in the plan's order, all after the steps heading.
    opens = html_blocks(toks, "<details>")
    closes = html_blocks(toks, "</details>")
    assert len(opens) == len(closes) == len(plan.steps) == 14
    assert all(steps_at < toks.index(t) < guid_at for t in opens)
    for number, (token, step) in enumerate(zip(opens, plan.steps), start=1):
        assert f"<b>{number}.</b>" in token.content
        assert esc(step.summary) in token.content
    # The diffs are ```diff fences inside the sections.
    fences = [t for t in toks if t.type == "fence"]
    assert fences and all(t.info == "diff" for t in fences)
    disable = next(t for t in fences if "- enabled: true" in t.content)
    assert "+ enabled: false" in disable.content
    # The copy is a create: its whole rule as + lines.
    assert any("+ flows.msExchMailboxGuid: Expression NULL (Update, apply once)" in t.content for t in fences)
    # The GUID table: object type, now, after.
    guid_table = [i for i, t in enumerate(toks) if t.type == "table_open"][1]
    assert guid_table > guid_at
    rows = [t.content for t in toks[guid_table:] if t.type == "inline"][:9]
    assert rows[:3] == ["object type", "now", "after"]
    assert {rows[3], rows[6]} == {"inetOrgPerson", "user"}
    # Notices: warnings first.
    items = [t.content for t in toks[notices_at:] if t.type == "inline"][1:]
    levels = [i.split(" ", 1)[0] for i in items if i.startswith(("**Warning**", "Info"))]
    assert levels and levels == sorted(levels, key=lambda l: l != "**Warning**")
    # No irreversible banner on Solution 1.
    assert "[!CAUTION]" not in text
    assert comment_length(text) < GITHUB_COMMENT_LIMIT


def test_rebuild_plan_has_the_irreversible_banner_and_lists_every_purged_user(target):
    plan = plan_for(REBUILD, target)
    text = render_markdown(saved(plan))
    toks = tokens(text)
    quotes = [i for i, t in enumerate(toks) if t.type == "blockquote_open"]
    first_details = toks.index(html_blocks(toks, "<details>")[0])
    banner = " ".join(t.content for t in toks[quotes[0] :] if t.type == "inline")
    assert quotes[0] < first_details
    assert "[!CAUTION]" in banner and "21 user(s)" in banner and "--approve-irreversible" in banner
    # The unsafe reason too, with --force.
    assert "Too many deletes" in text and "--force" in text
    purge = next(t for t in html_blocks(toks, "<details>") if "IRREVERSIBLE" in t.content)
    start = toks.index(purge)
    end = next(i for i in range(start, len(toks)) if toks[i].type == "html_block" and "</details>" in toks[i].content)
    listed = [t.content for t in toks[start:end] if t.type == "inline" and "@" in t.content]
    assert len(listed) == 21
    assert "<code>contractor01@contoso.com</code>" in listed


def test_no_changes_is_a_short_comment(target):
    plan_and_apply(EXAMPLE, target)
    plan = plan_for(EXAMPLE, target)
    assert not plan.steps
    text = render_markdown(saved(plan))
    assert text.startswith(MARKER + "\n")
    assert "**No changes.**" in text
    assert "<details>" not in text and "### Steps" not in text
    assert len(text) < 3000


def test_unsafe_may_be_missing_and_unknown_keys_are_ignored(target):
    data = plan_to_dict(plan_for(EXAMPLE, target))
    data["something_new"] = {"nested": [1, 2]}
    for key in ("unsafe", "approvals_needed", "counts"):
        data.pop(key, None)
    text = render_markdown(data)
    assert text.startswith(MARKER) and "[!WARNING]" not in text
    # Counts are computed from the steps when the dict has none.
    assert "| 2 | 8 | 2 | 1 | 1 | 1 | 0 |" in text


def test_scripts_are_shown_in_powershell_fences_that_backticks_cannot_close(target):
    plan = plan_for(EXAMPLE, target)
    script = "Set-ADSyncScheduler -SyncCycleEnabled $false\n# ``` not the end\nWrite-Output '</details>'"
    text = render_markdown(saved(plan, {"scheduler.pause": script}))
    toks = tokens(text)
    fence = next(t for t in toks if t.type == "fence" and t.info == "powershell")
    assert fence.content.rstrip("\n") == script
    assert len(html_blocks(toks, "<details>")) == len(plan.steps)


def test_huge_plan_is_shortened_under_the_limit_and_points_to_the_file():
    target = LabTarget(scenario.build(users=20000))
    plan = plan_for(EXAMPLE, target)
    data = saved(plan, {"scheduler.pause": "Set-ADSyncScheduler -SyncCycleEnabled $false\n" * 50})
    full = len(json.dumps(data))
    assert full > 4 * GITHUB_COMMENT_LIMIT  # the users alone would not fit
    text = render_markdown(data, plan_file="plan.json")
    assert comment_length(text) <= GITHUB_COMMENT_LIMIT
    toks = tokens(text)
    assert toks[0].content.strip() == MARKER
    # Still one section per step; scripts gone first, then the user lists cut.
    assert len(html_blocks(toks, "<details>")) == len(plan.steps)
    assert not any(t.type == "fence" and t.info == "powershell" for t in toks)
    assert "Script left out" in text
    assert re.search(r"… and \d+ more", text)
    assert "Shortened to fit a comment" in text and "<code>plan.json</code>" in text
    # The note comes before the summary: nobody mistakes this for the whole plan.
    assert text.index("Shortened to fit") < text.index("### Summary")


@pytest.mark.parametrize("limit", [6000, 2500, 1200, 600, 400, 120, 30])
def test_tighter_limits_degrade_to_one_line_per_step_and_never_exceed(target, limit):
    plan = plan_for(REBUILD, target)
    data = saved(plan)
    text = render_markdown(data, limit=limit, plan_file="plan.json")
    assert comment_length(text) <= limit
    assert text.startswith(MARKER)
    # A cut never leaves a banner without its text.
    assert not text.rstrip().endswith(("[!CAUTION]", "[!WARNING]", "[!NOTE]"))
    toks = tokens(text)
    if limit >= 1200:
        # The summary and the irreversible banner outlive the steps and notices.
        assert "### Summary" in text and "permanently deletes 21 user(s)" in text
    if limit >= 2500:
        # One line per step: an ordered list, no sections; the banner stays.
        assert not html_blocks(toks, "<details>")
        assert any(t.type == "ordered_list_open" for t in toks)
        assert "IRREVERSIBLE" in text and "plan.json" in text


def test_mask_users_leaves_no_upn_anywhere(target):
    plan = plan_for(REBUILD, target)
    data = saved(plan)
    # A UPN in a notice and in the plan's own summary text must go too.
    assert any("@contoso.com" in n["message"] for n in data["notices"])
    for limit in (GITHUB_COMMENT_LIMIT, 3000):
        text = render_markdown(data, mask_users=True, limit=limit, plan_file="plans/user01@contoso.com.json")
        assert "@contoso.com" not in text and "contoso.onmicrosoft.com@" not in text
        assert "user07" not in text
    full = render_markdown(data, mask_users=True)
    # Stable pseudonyms: the same user gets the same name in the purge list and the notices.
    assert pseudonym("user07@contoso.com") in full
    assert full.count(pseudonym("user01@contoso.com")) >= 2
    assert pseudonym("user01@contoso.com") == pseudonym("USER01@contoso.com")
    # The original plan is untouched.
    assert any("@contoso.com" in n["message"] for n in data["notices"])


HOSTILE = 'Evil</summary></details><script>alert(1)</script> | ``` **x** [y](http://z) @org/team\n# Heading <!--'


def test_hostile_rule_names_are_escaped(target):
    text = f"""
[[rules]]
name = {json.dumps(HOSTILE)}
kind = "custom"
precedence = 50
source_object_type = "user"

  [[rules.flows]]
  destination = "msExchMailboxGuid"
  flow_type = "Expression"
  expression = "AuthoritativeNull"

[[licenses]]
sku = "ENTERPRISEPACK"
ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]
"""
    desired = loads_desired(text)
    plan = plan_for(desired, target)
    data = saved(plan)
    data["notices"].append({"level": "warning", "code": "x", "message": HOSTILE})
    output = render_markdown(data)
    toks = tokens(output)
    fences = [t for t in toks if t.type == "fence"]
    # Raw only inside code fences, which GitHub shows as text; nowhere else.
    for raw in ("<script>", "@org/team", "</summary></details>", "**x**"):
        assert output.count(raw) == sum(t.content.count(raw) for t in fences), raw
    # Still exactly one section per step, the hostile name inside a section title.
    opens, closes = html_blocks(toks, "<details>"), html_blocks(toks, "</details>")
    assert len(opens) == len(closes) == len(plan.steps)
    evil = [t for t in opens if "Evil" in t.content]
    assert evil and all(t.content.count("</summary>") == 1 and "</details>" not in t.content for t in evil)
    # No heading, link, emphasis or raw HTML came out of it.
    headings = [toks[i + 1].content for i, t in enumerate(toks) if t.type == "heading_open"]
    assert not any("Heading" in h for h in headings)
    inline = [t for t in toks if t.type == "inline" and "Evil" in t.content]
    assert inline  # the notice
    for token in inline:
        kinds = [child.type for child in token.children]
        assert "link_open" not in kinds
        assert kinds.count("strong_open") <= 1  # our own **Warning** label
        assert all(c.content in ("<code>", "</code>", "<b>", "</b>") for c in token.children if c.type == "html_inline")
    # The diff fence of the created rule holds the name verbatim, and the fence is not broken by ```.
    fence = next(t for t in toks if t.type == "fence" and "+ name:" in t.content)
    assert HOSTILE.replace("\n", "\\n") in fence.content


def test_esc_neutralises_line_starts_and_entities():
    assert esc("- item").startswith("&#45;")
    assert esc("1. item").startswith("&#49;")
    assert esc("0.1.0") == "0.1.0"
    assert esc("# h").startswith("&#35;")
    assert esc("a|b") == "a&#124;b"
    assert esc("x@contoso.com") == "x@contoso.com"
    assert esc("hi @team") == "hi @&#8203;team"
    assert esc("a\nb\tc") == "a b c"


def test_the_drift_issue_masks_upns_and_mentions_nobody(cli):
    """The nightly drift issue showed UPNs and let @team mentions through (issue 15)."""
    import re

    from reconciler.drift import DriftItem, DriftReport
    from reconciler.markdown import drift_markdown

    detail = "alice@contoso.com lost ENTERPRISEPACK; rule description says: ping @security-team and @org/admins"
    report = DriftReport("desired-state/p.toml", "t", (DriftItem("user/alice@contoso.com", "licence removed", detail),), ("mailbox of bob@contoso.com",))
    masked = drift_markdown(report, mask_users=True)
    assert masked.startswith("<!-- syncprep:drift -->")
    assert "alice@contoso.com" not in masked and "bob@contoso.com" not in masked and "user-" in masked
    assert not re.search(r"(?<![\w.+-])@[A-Za-z0-9]", masked), "no @mention GitHub would ping"
    assert "alice@contoso.com" in drift_markdown(report) and "@security-team" not in drift_markdown(report)
    cli("lab", "init")
    code, out, _err = cli("drift", EXAMPLE, "--markdown", "--mask-users")
    assert code == 2 and out.startswith("<!-- syncprep:drift -->")
    assert cli("drift", EXAMPLE, "--mask-users")[0] == 1


# GitHub's emoji filter: ":name:" in any text node outside pre, code and tt, names from its
# list (a few here), after Markdown is rendered and character references decoded.
EMOJI = re.compile(r":(warning|white_check_mark|tada|\+1|-1|100|rocket|x):")
SHORTCODES = "Ops :warning: team :white_check_mark: :+1::100: :x: at 23:00:15"


def github_emoji(markdown):
    """The emoji GitHub would show in ``markdown`` (rendered by markdown-it as CommonMark)."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.open, self.found, self.text = [], [], []

        def handle_starttag(self, tag, attrs):
            self.open.append(tag)

        def handle_endtag(self, tag):
            if tag in self.open:
                del self.open[len(self.open) - 1 - self.open[::-1].index(tag) :]

        def handle_data(self, data):
            self.text.append(data)
            if not {"pre", "code", "tt"} & set(self.open):
                self.found += EMOJI.findall(data)

    parser = Text()
    parser.feed(MarkdownIt("commonmark").enable("table").render(markdown))
    return parser.found, "".join(parser.text).replace("\u200b", "")


def test_shortcodes_from_the_tenant_show_as_text_not_emoji(target):
    plan = plan_for(EXAMPLE, target)
    data = saved(plan)
    data["steps"][0]["summary"] = f"license {SHORTCODES}"
    data["notices"].append({"level": "warning", "code": "x", "message": SHORTCODES})
    output = render_markdown(data)
    assert github_emoji(f"a {SHORTCODES}")[0], "the check sees GitHub's emoji"
    found, text = github_emoji(output)
    assert found == [], found
    assert text.count(SHORTCODES) == 2  # the step's title and the notice, shown as written
    assert "23:00:15" in output  # a time is left alone


def test_shortcodes_in_the_drift_issue_show_as_text(target):
    from reconciler.drift import DriftItem, DriftReport
    from reconciler.markdown import drift_markdown

    report = DriftReport("p.toml", "t", (DriftItem("rule/In from AD :rocket:", "changed", SHORTCODES),), (SHORTCODES,))
    found, text = github_emoji(drift_markdown(report))
    assert found == [] and SHORTCODES in text, found


def test_esc_breaks_a_shortcode_but_not_code_or_a_time():
    assert esc("Ops :warning: team") == "Ops :&#8203;warning: team"
    assert esc(":white_check_mark:") == ":&#8203;white&#95;check&#95;mark:"
    assert esc(":+1: :-1: :100:") == ":&#8203;+1: :&#8203;-1: :&#8203;100:"
    assert esc("23:00:15 and a:b") == "23:00:15 and a:b"
    assert esc(":warning:", shortcodes=False) == ":warning:"
