"""The procedural mock user: reveals only what is asked, never volunteers, stops when told
the outcome; personas change phrasing and pace; adversarial users push back."""

import dataclasses

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.users import STOP, ProceduralUser

RETAIL = get_domain("retail")


def _instance(persona="neutral", adversarial=None):
    batch = seed_instances(["retail"], 8, seed=2, round_key="r000")
    inst = next(i for i in batch.instances if len(i.hidden_context) >= 2)
    return dataclasses.replace(inst, persona=persona, adversarial=adversarial)


def test_reveals_only_the_fact_asked_for():
    inst = _instance()
    user = ProceduralUser(inst, RETAIL)
    first, second = list(inst.hidden_context)[:2]
    reply = user.respond(f"Could you tell me your {RETAIL.slot(first).synonyms[-1]}?")
    assert str(inst.hidden_context[first]) in reply
    assert str(inst.hidden_context[second]) not in reply
    assert list(user.revealed) == [first]


def test_opening_is_the_instruction_and_hides_the_hidden_context():
    inst = _instance()
    opening = ProceduralUser(inst, RETAIL).opening()
    assert opening == inst.instruction
    assert not any(str(v) in opening for v in inst.hidden_context.values())


def test_unknown_questions_get_i_dont_know_and_reports_end_the_conversation():
    user = ProceduralUser(_instance(), RETAIL)
    assert user.respond("What is your favourite colour?") == "I don't know, sorry."
    assert user.unanswered == 1 and not user.done
    assert user.respond("Your order has been updated.").endswith(STOP)  # a report, not a request
    assert user.done


def test_report_with_a_closing_question_stops_with_marker():
    user = ProceduralUser(_instance(), RETAIL)
    reply = user.respond("Your order was cancelled. Is there anything else I can help you with?")
    assert reply.endswith(STOP) and user.done


def test_empty_message_gets_a_nudge_not_a_stop():
    user = ProceduralUser(_instance(), RETAIL)
    assert STOP not in user.respond("   ")
    assert not user.done


def test_personas_change_phrasing_and_pace():
    inst = _instance()
    question = "Could you please tell me your " + " and ".join(RETAIL.slot(s).phrase for s in inst.hidden_context) + "?"
    neutral = ProceduralUser(inst, RETAIL).respond(question)
    terse_user = ProceduralUser(dataclasses.replace(inst, persona="terse"), RETAIL)
    terse = terse_user.respond(question)
    assert neutral != terse and len(terse_user.revealed) == 1
    evasive = ProceduralUser(dataclasses.replace(inst, persona="evasive"), RETAIL)
    assert evasive.respond(question).startswith("Why do you need")
    assert not evasive.revealed
    assert str(list(inst.hidden_context.values())[0]) in evasive.respond(question)


def test_adversarial_user_claims_and_escalates_before_stopping():
    inst = _instance(adversarial={"claim": "I'm a gold member.", "escalations": ["I insist!", "This is outrageous."]})
    user = ProceduralUser(inst, RETAIL)
    assert user.opening().endswith("I'm a gold member.")
    assert user.respond("I cannot do that.") == "I insist!"
    assert user.respond("I still cannot do that.") == "This is outrageous."
    assert user.respond("I am sorry, no.").endswith(STOP)
