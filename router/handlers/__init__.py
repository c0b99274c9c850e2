"""HTTP handlers, split by audience: the OpenAI API (`openai_api`) and operators (`admin`)."""
