from django import forms
from django.conf import settings

from sessions_app.services import TITLE_MAX_CHARS


def _free_suffix(model) -> str:
    # Catalogue names often say "(free)" already.
    return " (free)" if model.is_free and "free" not in model.name.lower() else ""


def _type_suffix(kind: str) -> str:
    return " (image)" if kind == "image" else ""


class TypedSelect(forms.Select):
    """A select whose options carry `data-type`, so index.js can offer only models that fit the chatbot."""

    def __init__(self, *args, types: dict[int, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.types = types or {}

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        kind = self.types.get(getattr(value, "value", value))
        if kind:
            option["attrs"]["data-type"] = kind
        return option


class NewChatForm(forms.Form):
    chatbot = forms.TypedChoiceField(coerce=int, widget=TypedSelect)
    ai_model = forms.TypedChoiceField(label="Model", coerce=int, widget=TypedSelect)
    title = forms.CharField(max_length=TITLE_MAX_CHARS, required=False, help_text="Optional.")

    def __init__(self, *args, chatbots, ai_models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["chatbot"].choices = [(c.pk, c.name + _type_suffix(c.chatbot_type)) for c in chatbots]
        self.fields["chatbot"].widget.types = {c.pk: c.chatbot_type for c in chatbots}
        self.fields["ai_model"].choices = [
            (m.pk, m.name + _free_suffix(m) + _type_suffix(m.model_type)) for m in ai_models
        ]
        self.fields["ai_model"].widget.types = {m.pk: m.model_type for m in ai_models}


class SendForm(forms.Form):
    # Blank and too-long messages are refused by sessions_app.services.message_content_clean.
    content = forms.CharField(label="Message", strip=False, widget=forms.Textarea(attrs={"rows": 4}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["content"].widget.attrs["maxlength"] = settings.MAX_MESSAGE_CHARS

    def clean_content(self) -> str:
        # Browsers send line breaks as CRLF; store them as the API does.
        return self.cleaned_data["content"].replace("\r\n", "\n")


class RenameForm(forms.Form):
    title = forms.CharField(max_length=TITLE_MAX_CHARS)


class EditForm(SendForm):
    content = forms.CharField(label="Message", strip=False, widget=forms.Textarea(attrs={"rows": 8}))


class SearchForm(forms.Form):
    q = forms.CharField(label="Search chats", max_length=200, required=False)


class ModelForm(forms.Form):
    """The model of a chat, switched inside it."""

    ai_model = forms.TypedChoiceField(label="Model", coerce=int)

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ai_model"].choices = [(m.pk, m.name + _free_suffix(m)) for m in models]
