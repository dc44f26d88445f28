from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from linkdesk.core import bulk, rules
from linkdesk.core.model import Actor, ClientLink, ClientLinkStatus, CustomerLinkPermission, LinkType, Role

NOW = datetime(2025, 11, 3, 12, 0, tzinfo=timezone.utc)
AGENCY = Actor(user_id=1, customer_id=100, role=Role.SuperAdmin, customer_name="Contoso Agency")


def codes(row: bulk.BulkRow) -> set[int]:
    return {p.code for p in row.problems}


def test_header_bom_crlf_blank_lines_and_quotes():
    data = ("\ufefftype,client_account_id,bill_to,name,note\r\n"
            "\r\n"
            'AccountLink,123456,client,"Shoes, Inc.","He said ""hi""\r\nsecond line"\r\n'
            ",,,,\r\n"
            "account,234567,agency,,\r\n").encode("utf-8")
    f = bulk.parse(data)
    assert f.columns == ("type", "client_id", "bill_to", "name", "note")
    assert [r.line for r in f.rows] == [4, 6]
    first, second = f.rows
    assert first.ok and second.ok
    assert first.draft == ClientLink(type=LinkType.AccountLink, client_entity_id=123456, is_bill_to_client=True,
                                     name="Shoes, Inc.", note='He said "hi"\r\nsecond line')
    assert second.draft.is_bill_to_client is False and second.draft.name is None


def test_header_names_are_forgiving_and_aliases_work():
    f = bulk.parse(b"Type, Client Account Number ,BILL-TO,Permission,Suppress Notification,Start Date\n"
                   b"customer,C123456,,administrative,yes,2025-12-01\n")
    (row,) = f.rows
    assert row.ok, row.verdict
    assert row.draft.type == LinkType.CustomerLink
    assert row.draft.client_entity_number == "C123456"
    assert row.draft.customer_link_permission == CustomerLinkPermission.Administrative
    assert row.draft.suppress_notification is True
    assert row.draft.start_date == datetime(2025, 12, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("value", ["12a", "-5", "0", "1.5", "٣٤٥", "99999999999999999999"])
def test_bad_ids_are_row_errors(value):
    f = bulk.parse(f"client_account_id,bill_to\n{value},client\n111,client\n")
    bad, good = f.rows
    assert not bad.ok and rules.E_INVALID_ID in codes(bad) and bad.draft is None
    assert "whole number" in bad.verdict
    assert good.ok


def test_both_id_and_number_and_neither():
    f = bulk.parse("client_account_id,client_account_number,bill_to\n123,F123456,client\n,,client\n")
    both, neither = f.rows
    assert codes(both) == {rules.E_ID_AND_NUMBER}
    assert codes(neither) == {rules.E_ID_OR_NUMBER_REQUIRED}


def test_duplicates_inside_the_file_point_at_the_first_line():
    f = bulk.parse("type,client_account_id,bill_to\n"
                   "AccountLink,555,client\n"
                   "account,0555,agency\n"
                   "CustomerLink,555,\n")
    first, dup, other_type = f.rows
    assert first.ok
    assert codes(dup) == {rules.E_DUPLICATE_IN_REQUEST}
    assert "line 2" in dup.verdict
    assert rules.E_DUPLICATE_IN_REQUEST not in codes(other_type)  # a customer link is another identity


@pytest.mark.parametrize("header, message", [
    ("client_account_id,colour\n1,red\n", "Unknown column 'colour'"),
    ("bill_to,name\nclient,x\n", "needs a client_account_id or a client_account_number column"),
    ("client_id,client_account_id\n1,2\n", "mean the same thing"),
    ("123456,client\n234567,agency\n", "must be a header"),
    ("client_account_id\n", "no invitations"),
    ("", "empty"),
    ("\r\n\r\n", "empty"),
])
def test_file_level_errors(header, message):
    with pytest.raises(bulk.BulkFileError) as e:
        bulk.parse(header)
    assert message in str(e.value)


@pytest.mark.parametrize("data, message", [
    ("client_account_id\n1\n".encode("utf-16"), "UTF-16"),
    (b"client_account_id,name\n1,Caf\xe9\n", "not UTF-8"),
    (b"PK\x03\x04rest-of-a-zip", ".xlsx"),
    (b"\x00\x01\x02binary", "binary"),
    (b'client_account_id,name\n1,"unterminated\n', "not valid CSV"),
])
def test_wrong_encodings_and_non_csv(data, message):
    with pytest.raises(bulk.BulkFileError) as e:
        bulk.parse(data)
    assert message in str(e.value)


def test_row_limit_is_enforced_and_said():
    ok = "client_account_id,bill_to\n" + "".join(f"{i},client\n" for i in range(1, 51))
    assert len(bulk.parse(ok, max_rows=50).rows) == 50
    with pytest.raises(bulk.BulkFileError) as e:
        bulk.parse(ok + "51,client\n", max_rows=50)
    assert "at most 50 rows" in str(e.value)


def test_huge_file_is_refused_unread(tmp_path, monkeypatch):
    p = tmp_path / "big.csv"
    p.write_text("client_account_id\n" + "1\n" * 100)
    monkeypatch.setattr(bulk, "MAX_BYTES", 50)
    with pytest.raises(bulk.BulkFileError) as e:
        bulk.read_file(p)
    assert "Split it" in str(e.value)


def test_read_file_missing_and_folder(tmp_path):
    with pytest.raises(bulk.BulkFileError, match="no file"):
        bulk.read_file(tmp_path / "nope.csv")
    with pytest.raises(bulk.BulkFileError, match="folder"):
        bulk.read_file(tmp_path)


def test_values_that_are_not_understood():
    f = bulk.parse("type,client_account_id,bill_to,permission,start_date,suppress_notification\n"
                   "Link,1,client,,,\n"
                   "AccountLink,2,nobody,,,\n"
                   "CustomerLink,3,,Owner,,\n"
                   "AccountLink,4,client,,tomorrow,\n"
                   "AccountLink,5,client,,,maybe\n")
    msgs = [r.verdict for r in f.rows]
    assert "AccountLink or CustomerLink" in msgs[0]
    assert "'client' or 'agency'" in msgs[1]
    assert "Administrative or Standard" in msgs[2]
    assert "date like" in msgs[3]
    assert "true or false" in msgs[4]


def test_extra_fields_beyond_the_header():
    (row,) = bulk.parse("client_account_id,bill_to\n1,client,surprise\n").rows
    assert not row.ok and "more fields" in row.verdict


def test_check_adds_rule_verdicts_with_cache_context():
    existing = ClientLink(type=LinkType.AccountLink, client_entity_id=777, managing_customer_id=100,
                          status=ClientLinkStatus.LinkPending, last_modified_date_time=NOW)
    f = bulk.parse("type,client_account_id,bill_to,name,permission\n"
                   "AccountLink,777,client,,\n"            # blocked by the pending link
                   "AccountLink,778,,,\n"                  # who pays missing
                   f"AccountLink,779,agency,{'x' * 41},\n"  # name too long
                   "CustomerLink,900,,,Standard\n"         # fine for a Super Admin
                   "AccountLink,abc,client,,\n")           # parse error only, rules not consulted

    def check_draft(d: ClientLink) -> list[rules.Violation]:
        return rules.check_new_invitation(d, actor=AGENCY, now=NOW,
                                          existing=[existing] if d.client_entity_id == 777 else [])

    checked = bulk.check(f, check_draft, managing_customer_id=100)
    verdicts = [codes(r) for r in checked.rows]
    assert verdicts[0] == {rules.E_DUPLICATE}
    assert verdicts[1] == {rules.E_BILL_TO_REQUIRED}
    assert verdicts[2] == {rules.E_NAME_TOO_LONG}
    assert verdicts[3] == set()
    assert verdicts[4] == {rules.E_INVALID_ID}
    assert checked.rows[3].draft.managing_customer_id == 100
    assert len(checked.ready) == 1 and len(checked.failed) == 4
    assert "LinkPending" in checked.rows[0].verdict


def test_check_does_not_repeat_a_problem_the_parser_found():
    f = bulk.parse("client_account_id,client_account_number,bill_to\n12345,F12345,client\n")
    checked = bulk.check(f, lambda d: rules.check_new_invitation(d, actor=AGENCY, now=NOW), 100)
    assert [p.code for p in checked.rows[0].problems] == [rules.E_ID_AND_NUMBER]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data):
    try:
        f = bulk.parse(data)
    except bulk.BulkFileError as e:
        assert str(e).endswith(".") or str(e)[-1] in ".)"
        return
    for row in f.rows:
        assert row.ok or row.problems


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(max_size=12), min_size=1, max_size=6), max_size=8))
def test_arbitrary_cells_under_a_valid_header_never_crash(rows):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["type", "client_account_id", "client_account_number", "bill_to", "name", "start_date"])
    w.writerows(rows)
    try:
        f = bulk.parse(buf.getvalue())
    except bulk.BulkFileError:
        return
    checked = bulk.check(f, lambda d: rules.check_new_invitation(d, actor=AGENCY, now=NOW), 100)
    for row in checked.rows:
        assert row.ok == (not row.problems and row.draft is not None)
