"""Turn a whole chat into a downloadable document."""

import json

from django.core.serializers.json import DjangoJSONEncoder

from sessions_app.models import ChatSession
from sessions_app.serializers import ChatMessageSerializer, ChatSessionSerializer


def export_json(*, session: ChatSession, messages) -> str:
    document = {
        "session": ChatSessionSerializer(session).data,
        "messages": ChatMessageSerializer(messages, many=True).data,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, indent=2, ensure_ascii=False)


def export_markdown(*, session: ChatSession, messages) -> str:
    lines = [
        f"# {session.title}",
        "",
        f"- Chatbot: {session.chatbot.name}",
        f"- Model: {session.ai_model.name} (`{session.ai_model.model_id}`)",
        f"- Started: {session.created_at.isoformat()}",
        "",
    ]
    for message in messages:
        if message.disabled:
            continue
        speaker = "You" if message.message_type == "user" else session.chatbot.name
        lines += [f"## {speaker}", "", f"*{message.created_at.isoformat()}*", ""]
        if message.content:
            lines += [message.content, ""]
        if message.image_url:
            lines += [f"![image]({message.image_url})", ""]
    return "\n".join(lines)
