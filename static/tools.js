// @ts-check
// The page's demo tools: offered to the model with every message while "Demo tools" is
// on, and run in the browser once the person approves a call (the server never runs a
// tool; the page sends what one returned with `submitToolResults`). `current_time` says
// the browser's date, time and time zone; `calculator` evaluates + - * / with
// parentheses and decimals by a small parser of its own: the expression is never run
// as code.

/** @import { ToolInput } from "./queries.js" */

const SETTING_KEY = "chat.demoTools";

/** What a call the person declined answers. */
export const DECLINED = "declined by the user";
/** What a call of a tool the page does not have answers. */
export const UNKNOWN_TOOL = "unknown tool";
/** What the server answers for calls a new message left unanswered. */
export const CANCELLED = "cancelled";

/** @type {ToolInput[]} */
export const DEMO_TOOLS = [
  {
    name: "current_time",
    description:
      "The current date and time of the user's browser (ISO 8601 with its UTC offset) " +
      "and its time zone.",
    parameters: { type: "object", properties: {} },
  },
  {
    name: "calculator",
    description:
      "Evaluates an arithmetic expression of numbers (decimals allowed), + - * / and " +
      "parentheses, for example (2.5 + 4) * 3 / 2.",
    parameters: {
      type: "object",
      properties: { expression: { type: "string", description: "The expression to evaluate." } },
      required: ["expression"],
    },
  },
];

/** @type {Record<string, (args: string) => string>} */
const RUNNERS = {
  current_time: () => currentTime(new Date()),
  calculator,
};

/** @returns {boolean} whether the page offers its demo tools (on unless turned off) */
export function demoToolsOn() {
  return localStorage.getItem(SETTING_KEY) !== "off";
}

/** @param {boolean} on */
export function setDemoTools(on) {
  if (on) localStorage.removeItem(SETTING_KEY);
  else localStorage.setItem(SETTING_KEY, "off");
}

/** @returns {ToolInput[] | null} the tools a turn offers the model; null for none */
export function offeredTools() {
  return demoToolsOn() ? DEMO_TOOLS : null;
}

/**
 * @param {string} name
 * @returns {boolean} whether the page has a tool of that name
 */
export function knowsTool(name) {
  return Object.hasOwn(RUNNERS, name);
}

/**
 * Runs a call of the tool `name` with its arguments (JSON text): what it returned, as
 * text; an error as text too (the model reads it), and UNKNOWN_TOOL for a tool the page
 * does not have.
 * @param {string} name
 * @param {string} args
 * @returns {string}
 */
export function runTool(name, args) {
  return knowsTool(name) ? RUNNERS[name](args) : UNKNOWN_TOOL;
}

/**
 * The browser's date and time, as ISO 8601 text in its own time zone (with the offset),
 * and the zone's name.
 * @param {Date} now
 * @returns {string} JSON text: {"time", "timeZone"}
 */
export function currentTime(now) {
  /** @param {number} n */
  const two = (n) => String(n).padStart(2, "0");
  const east = -now.getTimezoneOffset(); // minutes east of UTC
  const offset = `${east < 0 ? "-" : "+"}${two(Math.floor(Math.abs(east) / 60))}:${two(Math.abs(east) % 60)}`;
  const date = `${String(now.getFullYear()).padStart(4, "0")}-${two(now.getMonth() + 1)}-${two(now.getDate())}`;
  const time = `${two(now.getHours())}:${two(now.getMinutes())}:${two(now.getSeconds())}`;
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  return JSON.stringify({ time: `${date}T${time}${offset}`, timeZone });
}

/**
 * The calculator's call: `{"expression": "..."}` evaluated, or what was wrong.
 * @param {string} args
 * @returns {string}
 */
function calculator(args) {
  /** @type {unknown} */
  let parsed;
  try {
    parsed = JSON.parse(args);
  } catch {
    return "error: the arguments are not JSON";
  }
  const expression = typeof parsed === "object" && parsed !== null
    ? /** @type {Record<string, unknown>} */ (parsed).expression : undefined;
  if (typeof expression !== "string") return 'error: the arguments must be {"expression": "<text>"}';
  try {
    return formatNumber(evaluate(expression));
  } catch (error) {
    return `error: ${/** @type {Error} */ (error).message}`;
  }
}

/** The longest expression, and the deepest nesting of parentheses and signs, taken. */
const MAX_EXPRESSION = 1000;
const MAX_DEPTH = 100;
const NUMBER = /\d+(?:\.\d*)?|\.\d+/y;
const SPACE = /\s*/y;

/**
 * Evaluates an arithmetic expression: numbers (`12`, `3.5`, `.5`), `+ - * /`, signs
 * and parentheses, with the usual precedence. Throws an Error saying what is wrong
 * (an unexpected character, a missing parenthesis, a division by zero).
 * @param {string} text
 * @returns {number}
 */
export function evaluate(text) {
  if (text.length > MAX_EXPRESSION) {
    throw new Error(`the expression is longer than ${MAX_EXPRESSION} characters`);
  }
  let at = 0;
  let depth = 0;

  /** @returns {string} the next character after spaces; "" at the end */
  const peek = () => {
    SPACE.lastIndex = at;
    SPACE.exec(text);
    at = SPACE.lastIndex;
    return text.charAt(at);
  };
  const unexpected = () => new Error(
    at >= text.length
      ? (text.trim() ? "the expression ends too soon" : "the expression is empty")
      : `unexpected "${text.charAt(at)}" at position ${at + 1}`,
  );
  const deeper = () => {
    depth += 1;
    if (depth > MAX_DEPTH) throw new Error(`nested more than ${MAX_DEPTH} deep`);
  };

  /** @returns {number} */
  function sum() {
    let value = product();
    for (let op = peek(); op === "+" || op === "-"; op = peek()) {
      at += 1;
      const right = product();
      value = op === "+" ? value + right : value - right;
    }
    return value;
  }

  /** @returns {number} */
  function product() {
    let value = factor();
    for (let op = peek(); op === "*" || op === "/"; op = peek()) {
      at += 1;
      const right = factor();
      if (op === "/" && right === 0) throw new Error("division by zero");
      value = op === "*" ? value * right : value / right;
    }
    return value;
  }

  /** @returns {number} */
  function factor() {
    const next = peek();
    if (next === "+" || next === "-") {
      at += 1;
      deeper();
      const value = factor();
      depth -= 1;
      return next === "-" ? -value : value;
    }
    if (next === "(") {
      at += 1;
      deeper();
      const value = sum();
      if (peek() !== ")") throw at >= text.length ? new Error('a ")" is missing') : unexpected();
      at += 1;
      depth -= 1;
      return value;
    }
    NUMBER.lastIndex = at;
    const found = NUMBER.exec(text);
    if (!found) throw unexpected();
    at = NUMBER.lastIndex;
    return Number(found[0]);
  }

  const value = sum();
  if (peek() !== "") throw unexpected();
  if (!Number.isFinite(value)) throw new Error("the result is too large");
  return value;
}

/**
 * A result as text, without the float noise of binary fractions (0.1 + 0.2 is "0.3").
 * @param {number} value
 * @returns {string}
 */
function formatNumber(value) {
  return String(Number(value.toPrecision(15)));
}
