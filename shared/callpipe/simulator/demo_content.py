"""What the demo calls say and who calls: the six calls of "Demo Kitchens & Baths".

The words here are exactly what espeak-ng speaks, so they are the ground truth for a
transcription benchmark (WER, speaker attribution): numbers are spelled out as spoken.
``labels`` is the analysis a good pipeline should reach for each call. Every phone number
is a fictional 555-01xx number and every name is invented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Speaker = Literal["agent", "caller"]
Layout = Literal["stereo", "mono"]
Codec = Literal["mp3", "wav"]


@dataclass(frozen=True)
class Voice:
    espeak: str  # espeak-ng voice name with variant, for example "en-us+f3"
    speed: int = 165  # words per minute
    pitch: int = 50  # 0-99


@dataclass(frozen=True)
class DemoCall:
    slug: str
    title: str
    start_time: str  # ISO-8601 in the company's time zone
    customer_name: str
    customer_phone: str  # E.164
    customer_city: str
    turns: tuple[tuple[Speaker, str], ...]
    voices: dict[Speaker, Voice]
    labels: dict[str, Any]
    layout: Layout | None = "mono"  # None: no recording
    codec: Codec = "mp3"
    answered: bool = True
    voicemail: bool = False
    first_call: bool = True
    call_type: str = "first_call"
    spam: bool = False
    agent_email: str | None = "megan.ortiz@demo-kitchens.example"
    source: str = "Google Organic"
    medium: str = "organic"
    missed_duration: int = 0  # ringing time of a call with no recording
    summary: str = ""
    sentiment: str = "neutral"
    extra: dict[str, Any] = field(default_factory=dict)


MEGAN = Voice("en-us+f3", speed=165, pitch=55)
TONY = Voice("en-us+m3", speed=160, pitch=45)

DEMO_CALLS: tuple[DemoCall, ...] = (
    DemoCall(
        slug="kitchen-quote",
        title="Kitchen remodel quote (stereo)",
        start_time="2026-11-16T09:42:17.204-08:00",
        customer_name="Daniel Brooks",
        customer_phone="+16265550187",
        customer_city="Pasadena",
        layout="stereo",
        voices={"agent": MEGAN, "caller": Voice("en-us", speed=160, pitch=40)},
        turns=(
            (
                "agent",
                "Thank you for calling Demo Kitchens and Baths, this is Megan. "
                "How can I help you today?",
            ),
            (
                "caller",
                "Hi Megan. My name is Daniel Brooks. My wife and I just bought a house in "
                "Pasadena, and we want to remodel the kitchen.",
            ),
            ("agent", "Congratulations on the new home! What did you have in mind?"),
            (
                "caller",
                "Pretty much everything. New cabinets, quartz countertops, a bigger island, "
                "and we want to move the sink under the window.",
            ),
            ("agent", "That sounds like a great project. Do you have a timeline in mind?"),
            (
                "caller",
                "We would like to start in about two months, and be finished before spring "
                "if possible.",
            ),
            ("agent", "That works with our schedule. Have you thought about a budget?"),
            (
                "caller",
                "We were thinking somewhere between forty and fifty thousand dollars, "
                "depending on the cabinets.",
            ),
            (
                "agent",
                "That is a realistic range for a full remodel with an island. "
                "Would you like us to prepare a quote?",
            ),
            (
                "caller",
                "Yes please. Could you email me a rough estimate first? We are still "
                "comparing a few companies.",
            ),
            (
                "agent",
                "Of course. Our designer will email you an estimate by Friday. "
                "Is this the best number to reach you?",
            ),
            ("caller", "Yes, this number is fine. Thanks for your help."),
            ("agent", "You are welcome, Daniel. Have a great day."),
        ),
        labels={
            "intent": "quote_request",
            "project_type": "kitchen_remodel",
            "timeline": "1_3_months",
            "budget_indicator": "high",
            "budget_range_usd": [40000, 50000],
            "sentiment": "positive",
            "urgency": "medium",
            "appointment_requested": False,
            "appointment_booked": False,
            "existing_customer": False,
            "spam": False,
        },
        summary=(
            "New homeowner in Pasadena wants a full kitchen remodel (cabinets, quartz, "
            "larger island, sink move), start in about two months, budget $40-50k; "
            "asked for an emailed estimate by Friday."
        ),
        sentiment="positive",
        extra={"tags": ["Kitchen"], "landing_page_url": "https://demo-kitchens.example/kitchens"},
    ),
    DemoCall(
        slug="bathroom-appointment",
        title="Bathroom remodel, consultation booked (mono)",
        start_time="2026-11-17T14:05:51.880-08:00",
        customer_name="Laura Kim",
        customer_phone="+16265550122",
        customer_city="Arcadia",
        layout="mono",
        agent_email="tony.russo@demo-kitchens.example",
        source="Google Ads",
        medium="cpc",
        voices={"agent": TONY, "caller": Voice("en-us+f4", speed=165, pitch=60)},
        turns=(
            ("agent", "Demo Kitchens and Baths, this is Tony speaking."),
            (
                "caller",
                "Hi Tony, this is Laura Kim. Our master bathroom shower is leaking into the "
                "wall, and I think it is time to redo the whole bathroom.",
            ),
            (
                "agent",
                "I am sorry to hear that. A leak like that should be looked at soon. "
                "Are you thinking about a walk in shower?",
            ),
            (
                "caller",
                "Yes, a walk in shower with glass doors, new tile, and a double vanity. "
                "We would like to get it done as soon as possible.",
            ),
            (
                "agent",
                "We can do that. The first step is a free consultation at your home. "
                "I have an opening this Thursday at ten in the morning. Would that work?",
            ),
            ("caller", "Thursday at ten works for me."),
            ("agent", "Great. Can I confirm your address?"),
            ("caller", "It is fourteen twenty eight Elm Street in Arcadia."),
            (
                "agent",
                "Perfect. Our project manager will see you on Thursday at ten. "
                "You will get a text reminder the day before.",
            ),
            ("caller", "Wonderful, thank you so much."),
        ),
        labels={
            "intent": "appointment_booking",
            "project_type": "bathroom_remodel",
            "timeline": "asap",
            "budget_indicator": "unknown",
            "budget_range_usd": None,
            "sentiment": "positive",
            "urgency": "high",
            "appointment_requested": True,
            "appointment_booked": True,
            "existing_customer": False,
            "spam": False,
        },
        summary=(
            "Leaking master shower; caller wants a full bathroom remodel with a walk-in "
            "shower and double vanity as soon as possible. In-home consultation booked "
            "for Thursday at 10 am."
        ),
        sentiment="positive",
        extra={"tags": ["Bathroom", "Appointment Set"]},
    ),
    DemoCall(
        slug="countertops-voicemail",
        title="Voicemail: countertops, asks for a callback",
        start_time="2026-11-18T18:31:09.412-08:00",
        customer_name="Priya Natarajan",
        customer_phone="+16265550143",
        customer_city="Glendale",
        layout="mono",
        answered=False,
        voicemail=True,
        call_type="voicemail",
        agent_email=None,
        voices={"caller": Voice("en-us+f2", speed=160, pitch=55)},
        turns=(
            (
                "caller",
                "Hi, this is Priya Natarajan. I am calling about new countertops and a "
                "backsplash for my kitchen. I saw your ad online. Could someone please call "
                "me back at six two six, five five five, zero one four three? "
                "I am usually free after four. Thank you.",
            ),
        ),
        labels={
            "intent": "callback_request",
            "project_type": "countertops",
            "timeline": "unknown",
            "budget_indicator": "unknown",
            "budget_range_usd": None,
            "sentiment": "neutral",
            "urgency": "medium",
            "appointment_requested": False,
            "appointment_booked": False,
            "existing_customer": False,
            "spam": False,
        },
        summary=(
            "Voicemail: wants new kitchen countertops and a backsplash; asks for a callback "
            "at 626-555-0143, free after 4 pm."
        ),
    ),
    DemoCall(
        slug="missed-call",
        title="Missed call, no recording",
        start_time="2026-11-18T19:02:44.031-08:00",
        customer_name="Wireless Caller",
        customer_phone="+18185550164",
        customer_city="Burbank",
        layout=None,
        answered=False,
        call_type="missed",
        agent_email=None,
        missed_duration=9,
        voices={},
        turns=(),
        labels={
            "intent": "unknown",
            "project_type": None,
            "timeline": "unknown",
            "budget_indicator": "unknown",
            "budget_range_usd": None,
            "sentiment": "neutral",
            "urgency": "low",
            "appointment_requested": False,
            "appointment_booked": False,
            "existing_customer": False,
            "spam": False,
        },
        summary="",
    ),
    DemoCall(
        slug="robocall",
        title="Robocall (spam)",
        start_time="2026-11-19T11:17:26.655-08:00",
        customer_name="Toll Free Caller",
        customer_phone="+18885550199",
        customer_city="",
        layout="mono",
        first_call=True,
        spam=True,
        source="Direct",
        medium="direct",
        voices={"caller": Voice("en-us+m7", speed=170, pitch=35)},
        turns=(
            (
                "caller",
                "Congratulations! You have been selected to receive a free cruise to the "
                "Bahamas. This is your final notice. To claim your prize, press one now. "
                "To be removed from our list, press two. Our travel specialists are standing "
                "by. Do not miss this exclusive offer.",
            ),
        ),
        labels={
            "intent": "spam",
            "project_type": None,
            "timeline": "unknown",
            "budget_indicator": "unknown",
            "budget_range_usd": None,
            "sentiment": "neutral",
            "urgency": "low",
            "appointment_requested": False,
            "appointment_booked": False,
            "existing_customer": False,
            "spam": True,
        },
        summary="Recorded sales message offering a free cruise: spam.",
        extra={"customer_state": "", "formatted_customer_location": ""},
    ),
    DemoCall(
        slug="warranty-hinge",
        title="Existing customer: cabinet hinge warranty (wav)",
        start_time="2026-11-20T08:55:03.117-08:00",
        customer_name="Robert Chen",
        customer_phone="+16265550158",
        customer_city="San Marino",
        layout="mono",
        codec="wav",
        first_call=False,
        call_type="inbound",
        source="Direct",
        medium="direct",
        voices={
            "agent": Voice("en-us+f5", speed=170, pitch=55),
            "caller": Voice("en-us+m2", speed=165, pitch=40),
        },
        turns=(
            ("agent", "Demo Kitchens and Baths, this is Megan."),
            (
                "caller",
                "Hi, this is Robert Chen. You remodeled our kitchen last spring, and one "
                "cabinet door is sagging. The hinge seems broken.",
            ),
            (
                "agent",
                "Sorry about that, Robert. Hinges are covered by our five year warranty. "
                "Can a technician come by next Tuesday morning?",
            ),
            ("caller", "Tuesday morning is fine. Thanks for taking care of it."),
        ),
        labels={
            "intent": "warranty_service",
            "project_type": "cabinet_repair",
            "timeline": "within_1_week",
            "budget_indicator": "none",
            "budget_range_usd": None,
            "sentiment": "neutral",
            "urgency": "medium",
            "appointment_requested": True,
            "appointment_booked": True,
            "existing_customer": True,
            "spam": False,
        },
        summary=(
            "Existing customer (kitchen remodeled last spring): sagging cabinet door with a "
            "broken hinge, covered by the five-year warranty; technician visit next Tuesday "
            "morning."
        ),
        extra={"tags": ["Existing Customer"], "prior_calls": 3, "total_calls": 4},
    ),
)
